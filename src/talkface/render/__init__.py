"""The default model's fixed stages: a photo's own pixels moved, region by region.

Each warp is made once per picture (or per video frame when dubbing) from its face mesh, and then
renders any number of frames; each moves only its own region's pixels, by a piecewise-affine warp
over a mesh of the face's landmarks (`talkface.geometry.warp_triangles`), and leaves every other
pixel exactly as it was:

    mouth.MouthWarp   the lips and chin, to where the motion model puts them (and a painted inside)
    refine.Refinement the mouth refiner's drawing of what the mouth warp cannot show
    eyes.EyeWarp      the lids (blinks) and brows
    head.HeadWarp     the whole head, turned in 3-D

`rig.FaceRig` composes them in that order for a frame's motion and expression, and
`rig.render_frames` renders many frames with one refiner call; `parallel.Renderer` spreads chunks
of frames over worker processes, one per core, and `parallel.LiveRenderers` live streams' frames,
each stream's rig in one of them.
"""
