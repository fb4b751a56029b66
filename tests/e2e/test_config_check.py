"""`neuron serve --config F --check` and `cortex serve --config F --check`:
exit 0 with a summary on good files (the documented examples), exit 1 with
every error as FILE:LINE on bad ones."""
import os
import subprocess
from pathlib import Path

import pytest

BIN = Path(os.environ.get("HELEXA_BIN", "build/bin"))
ROOT = Path(__file__).resolve().parents[2]


def run(binary, cfg, env=None):
    exe = BIN / binary
    if not exe.exists():
        pytest.skip(f"{exe} not built")
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(exe), "serve", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, timeout=60, env=e)


def test_neuron_example_ok():
    r = run("neuron", ROOT / "docs/examples/neuron.toml")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "gpu-box-1" in r.stdout


def test_cortex_example_ok():
    r = run("cortex", ROOT / "docs/examples/cortex.toml", {"HELEXA_API_KEY": "sk-e2e-test-key"})
    assert r.returncode == 0, r.stderr
    assert "2 profile(s)" in r.stdout and "gpu-box-1" in r.stdout


def test_neuron_bad(tmp_path):
    cfg = tmp_path / "neuron.toml"
    cfg.write_text('listen = "nowhere"\n[engine]\nkv_type = "f8"\nspeed = 1\n')
    r = run("neuron", cfg)
    assert r.returncode == 1
    assert f'{cfg}:1: key "listen" must be a listen address host:port' in r.stderr
    assert f'{cfg}:3: key "engine.kv_type" must be one of: f16, f32, q8_0 (not "f8")' in r.stderr
    assert f'{cfg}:4: key "engine.speed" is not a known key' in r.stderr


def test_cortex_bad(tmp_path):
    cfg = tmp_path / "cortex.toml"
    cfg.write_text('[eviction]\nstrategy = "random"\n[[neurons]]\nname = "a"\n'
                   'endpoint = "10.0.0.1:13131"\n')
    (tmp_path / "models.toml").write_text('[[models]]\nid = "m"\n[[models]]\nid = "m"\n')
    r = run("cortex", cfg)
    assert r.returncode == 1
    assert f'{cfg}:2: key "eviction.strategy" must be one of: lru, priority' in r.stderr
    assert f'{cfg}:5: key "neurons[0].endpoint" must be http://host:port' in r.stderr
    assert f'{tmp_path}/models.toml:3: key "models[1].id" "m" is already used' in r.stderr


def test_syntax_error_has_line_and_column(tmp_path):
    cfg = tmp_path / "neuron.toml"
    cfg.write_text('name = "x"\nlisten = \n')
    r = run("neuron", cfg)
    assert r.returncode == 1
    assert f"{cfg}:2:10: expected a value" in r.stderr


def test_missing_file(tmp_path):
    r = run("cortex", tmp_path / "nope.toml")
    assert r.returncode == 1
    assert "nope.toml: cannot open" in r.stderr


def test_docs_embed_the_examples():
    """docs/config.md shows the example files verbatim (they are the ones loaded above)."""
    doc = (ROOT / "docs/config.md").read_text()
    for name in ("cortex.toml", "models.toml", "neuron.toml"):
        text = (ROOT / "docs/examples" / name).read_text()
        assert "```toml\n" + text + "```" in doc, f"docs/config.md is out of date with {name}"
