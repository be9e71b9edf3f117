"""The README's Python examples run as written (with smaller budgets)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_example_trains_saves_loads_and_runs_a3c(tmp_path: Path) -> None:
    example = python_blocks()[0].replace("100_000", "2_000") + "    print('README example done')\n"
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The A2C part runs once: spawned A3C workers re-import the script but skip the __main__ block.
    assert result.stdout.count("README example done") == 1
    assert len(re.findall(r"\(np\.float64\(", result.stdout)) == 1
    assert (tmp_path / "a2c_cartpole.zip").is_file()


def test_readme_plugin_example_registers_and_trains(tmp_path: Path, plugin_host) -> None:
    """``plugin_host`` gives a fresh host and forgets the README's plugin afterwards."""
    from pgplug.cli import main

    plugin = tmp_path / "my_estimator.py"
    plugin.write_text(python_blocks()[1])
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "500", "--plugin", str(plugin)]
    code = main([*args, "--estimator", "clipped_td", "-f", str(tmp_path / "logs"), "--no-progress", "--seed", "0"])
    assert code == 0
    assert list((tmp_path / "logs" / "a2c").glob("CartPole-v1_1/CartPole-v1.zip"))
