"""Everything that touches media files: audio decoding and features, video reading and writing, faces."""
