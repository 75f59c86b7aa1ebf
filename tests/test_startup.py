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
