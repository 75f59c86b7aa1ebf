"""What a fresh process pays before any work: light imports for the command line, no librosa at run time."""
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import talkface
from talkface.cli import main

SRC = Path(__file__).parents[1] / "src"


def fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_version_names_the_bundled_model(capsys):
    from talkface.bundled import BUNDLED_MODEL

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"talkface {talkface.__version__} (bundled model: {BUNDLED_MODEL})"


def test_the_command_line_imports_nothing_heavy():
    heavy = ["torch", "mediapipe", "cv2", "av", "librosa", "numba", "scipy", "aiohttp", "openvino", "onnxruntime"]
    p = fresh(
        "import sys\n"
        "from talkface.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "[]"


def test_librosa_is_not_imported_at_run_time():
    modules = sorted(m.name for m in pkgutil.walk_packages([str(SRC / "talkface")], "talkface.") if m.name != "talkface.__main__")
    p = fresh(
        "import importlib, sys\n"
        f"for m in {modules!r}:\n    importlib.import_module(m)\n"
        "from talkface.config import AudioConfig\n"
        "from talkface.media.audio import mfcc_windows\n"
        "import numpy as np\n"
        "mfcc_windows(np.zeros(16000, np.float32), AudioConfig())\n"
        "print(sorted(m for m in ('librosa', 'soundfile') if m in sys.modules))"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "[]"


def test_the_compiled_loops_work_where_numba_can_keep_no_cache():
    """A read-only install with no home folder: numba finds nowhere to keep compiled code, and the
    loops are compiled at the start instead (numba would refuse `cache=True` outright)."""
    p = fresh(
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []  # no folder may be written\n"
        "import numpy as np\n"
        "from talkface.geometry import warp_triangles\n"
        "picture = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)\n"
        "source = np.array([[10, 10], [50, 10], [30, 50.0]])\n"
        "out = picture.copy()\n"
        "print(warp_triangles(picture, source, source + (3.0, 0), np.array([[0, 1, 2]]), out), int((out != picture).any(-1).sum()) > 100)"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "(13, 10, 54, 51) True"
