"""README samples run exactly as written (the text is read from README.md, not copied)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otpguard.transports.file import read_outbox

pytestmark = pytest.mark.slow  # runs the README's sample against otpguard serve

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.DOTALL)


def test_the_python_sample_prints_what_its_comment_says(tmp_path: Path) -> None:
    (sample,) = code_blocks(section("Use it from Python"), "python")
    expected = re.search(r"print\(result\.valid, result\.status\)\s+# (.+)", sample)
    assert expected is not None
    script = tmp_path / "sample.py"
    script.write_text(sample)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTPGUARD_", "TWILIO_"))}
    # Settings only: the file transport lets the test read the code as a phone would.
    env |= {"OTPGUARD_DATA_DIR": str(tmp_path / "data"), "OTPGUARD_TRANSPORT": "file"}
    outbox = tmp_path / "data" / "outbox.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (outbox.exists() and read_outbox(outbox)):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sample sent no code"
            time.sleep(0.05)  # waiting for the process to send, not testing time
        code = read_outbox(outbox)[-1]["code"]
        out, err = proc.communicate(code + "\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "code: " + expected.group(1)
