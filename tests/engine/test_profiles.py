"""Profiles as data: every shipped profile file parses, names real sae-lens releases / ids and transformer-lens
models, and loads through the engine with its weights replaced by local random ones (same architecture, same
layer count and hook, narrow widths; SAEs of the architecture its release converter produces, saved by
sae-lens); TOML errors and ad hoc profiles; the `profiles` and `serve` commands fail with one line."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.engine import compat
from app.engine.availability import missing_parts
from app.engine.profiles import (
    PROFILES_DIR,
    ProfileError,
    adhoc_profile,
    get_profile,
    load_profile_file,
    load_profiles,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"smollm2-135m", "gemma-2-2b", "gemma-2-2b-65k", "gpt2-small", "llama-3.1-8b", "tiny"}
# the real models' architecture and depth (the random stand-ins keep both; widths are narrow)
ARCH = {"SmolLM2-135M-Instruct": ("llama", 30), "gemma-2-2b": ("gemma2", 26), "gpt2-small": ("gpt2", 12),
        "meta-llama/Llama-3.1-8B": ("llama", 32)}
# the architecture sae-lens's converter gives each release's SAEs
SAE_ARCH = {"gemma-scope-2b-pt-res-canonical": "jumprelu", "gpt2-small-res-jb-feature-splitting": "standard",
            "llama_scope_lxr_8x": "jumprelu", "llama_scope_lxr_32x": "jumprelu"}


def test_shipped_profiles_parse():
    profiles = load_profiles()
    assert set(profiles) == SHIPPED
    assert get_profile("smollm2-135m").loader == "gguf" and get_profile("tiny").loader == "random"
    gpt2 = profiles["gpt2-small"]
    assert gpt2.hook_name == "blocks.8.hook_resid_pre" and gpt2.hook_layer == 8 and gpt2.prepend_bos
    assert (gpt2.coarse.sae_id, gpt2.fine.sae_id) == ("blocks.8.hook_resid_pre_768", "blocks.8.hook_resid_pre_24576")
    assert profiles["gemma-2-2b"].dtype_for("cuda") == "bfloat16" and profiles["gemma-2-2b"].dtype_for("cpu") == "float32"
    assert not profiles["smollm2-135m"].prepend_bos and profiles["smollm2-135m"].sink_norm == 500.0
    assert get_profile(str(PROFILES_DIR / "tiny.toml")) == profiles["tiny"]  # a path works too
    with pytest.raises(KeyError, match="known: .*gpt2-small"):
        get_profile("nope")


@pytest.mark.parametrize("name", sorted(SHIPPED - {"tiny", "smollm2-135m"}))
def test_release_ids_and_model_names_are_real(name):
    """Checked against the installed sae-lens's pretrained_saes.yaml and transformer-lens's model list."""
    p = get_profile(name)
    for spec in (p.coarse, p.fine):
        entry = compat.pretrained_sae_entry(spec.release)
        assert entry is not None, spec.release
        assert spec.sae_id in entry["saes"], (spec.release, spec.sae_id)
        assert compat.neuronpedia_id(spec.release, spec.sae_id), "every shipped release SAE has a Neuronpedia id"
        if spec.neuronpedia is not None:
            assert spec.neuronpedia == compat.neuronpedia_id(spec.release, spec.sae_id)
    official = compat.tl_official_name(p.model_name)
    assert official == p.hf_repo
    assert compat.pretrained_sae_entry(p.coarse.release)["model"] in (p.model_name, official)


def stand_in(profile, tmp: Path):
    """The profile with a random HF model of its architecture/depth and random SAEs saved by sae-lens."""
    import sae_lens as SL

    from app.engine.random_models import save_random_hf

    arch, layers = ARCH[profile.model_name]
    folder = save_random_hf(arch, tmp / "model", d_model=64, n_layers=layers, n_heads=4, n_kv=2)
    specs = {}
    for i, spec in enumerate((profile.coarse, profile.fine)):
        kind = SAE_ARCH.get(spec.release, "topk")
        meta = SL.saes.sae.SAEMetadata(hook_name=profile.hook_name)
        width = (96, 256)[i]
        cfg = {"standard": lambda: SL.StandardSAE(SL.StandardSAEConfig(d_in=64, d_sae=width, metadata=meta)),
               "jumprelu": lambda: SL.JumpReLUSAE(SL.JumpReLUSAEConfig(d_in=64, d_sae=width, metadata=meta)),
               "topk": lambda: SL.TopKSAE(SL.TopKSAEConfig(d_in=64, d_sae=width, k=8, metadata=meta))}[kind]
        torch.manual_seed(i)
        sae = cfg()
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.3)
            sae.W_dec.normal_(0, 0.3)
        sae.save_model(tmp / spec.name)
        specs[spec.name] = dataclasses.replace(spec, path=tmp / spec.name, release=None, sae_id=None)
    return dataclasses.replace(profile, loader="hf_dir", model_name=str(folder), **specs)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED - {"tiny"}))
def test_every_profile_loads_with_random_stand_ins(name, tmp_path):
    from app.engine import analysis as an
    from app.engine import generation as G
    from app.engine.engine import Engine
    from app.engine.sampling import SamplingParams

    prof = stand_in(get_profile(name), tmp_path)
    eng = Engine.build(prof, "cpu")
    assert eng.hook_name == get_profile(name).hook_name
    ids = ([256] if prof.prepend_bos else []) + eng.tokenizer.encode("profiles as data", add_special_tokens=False)
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=5)
    assert len(a.per_sae["fine"]) == len(ids)
    g = G.generate(eng.model, ids, 4, SamplingParams())
    assert g.decoder == "fast" and len(g.ids) == 4


def test_toml_errors_name_file_and_key(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[model]\nsource = "pretrained"\nname = "gpt2-small"\n[sae.coarse]\nrelease = "r"\nid = "a"\n'
                 '[sae.fine]\nrelease = "r"\nid = "b"\n')
    with pytest.raises(ProfileError, match=r"bad.toml: missing hook"):
        load_profile_file(f)
    f.write_text('hook = "blocks.1.hook_resid_post"\ncolour = 1\n[model]\nsource = "random"\n[sae.coarse]\n[sae.fine]\n')
    with pytest.raises(ProfileError, match=r"unknown keys \['colour'\]"):
        load_profile_file(f)
    f.write_text('hook = "blocks.1.hook_resid_post"\n[model]\nsource = "onnx"\n[sae.coarse]\n[sae.fine]\n')
    with pytest.raises(ProfileError, match="source 'onnx'"):
        load_profile_file(f)
    f.write_text('hook = "blocks.1.hook_resid_post"\n[model]\nsource = "random"\n[sae.coarse]\nrelease = "x"\n[sae.fine]\n')
    with pytest.raises(ProfileError, match="needs an id"):
        load_profile_file(f)
    f.write_text("hook = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(f)


def test_adhoc_profile(tmp_path):
    (tmp_path / "fine").mkdir()
    p = adhoc_profile("gpt2-small", "blocks.8.hook_resid_pre", "gpt2-small-res-jb-feature-splitting:blocks.8.hook_resid_pre_768",
                      str(tmp_path / "fine"))
    assert p.loader == "pretrained" and p.hook_name == "blocks.8.hook_resid_pre" and p.hook_layer == 8
    assert (p.coarse.release, p.coarse.sae_id) == ("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_768")
    assert p.fine.path == (tmp_path / "fine").resolve() and p.fine.release is None
    (tmp_path / "m").mkdir()
    assert adhoc_profile(str(tmp_path / "m"), "blocks.0.hook_resid_post", "a:b", "c:d").loader == "hf_dir"
    assert adhoc_profile(str(tmp_path / "x.gguf"), "blocks.0.hook_resid_post", "a:b", "c:d").loader == "gguf_file"
    with pytest.raises(ProfileError, match="expected blocks"):
        adhoc_profile("gpt2-small", "resid", "a:b", "c:d")
    with pytest.raises(ProfileError, match="RELEASE:ID"):
        adhoc_profile("gpt2-small", "blocks.8.hook_resid_pre", "nocolon", "c:d")


def test_missing_parts_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # what HF_HUB_CACHE sets at import
    miss = missing_parts(get_profile("gpt2-small"))
    assert miss[0] == "model: gpt2 (Hugging Face)"
    assert "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8" in miss[1]
    assert missing_parts(get_profile("tiny")) == []
    snap = tmp_path / "hub" / "models--gpt2" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert not any(m.startswith("model:") for m in missing_parts(get_profile("gpt2-small")))


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_profiles_command_lists_and_says_what_is_missing(tmp_path):
    proc = _run(["profiles"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line and not line.startswith(" ")}
    assert SHIPPED <= set(lines)
    assert " ready " in lines["tiny"] and " missing " in lines["gpt2-small"]
    assert "needs model: meta-llama/Llama-3.1-8B (Hugging Face, gated)" in proc.stdout


@pytest.mark.parametrize("args, expect", [
    (["serve", "--profile", "gpt2-small"], "gpt2"),
    (["serve", "--profile", "llama-3.1-8b"], "gated"),
    (["serve", "--profile", "nope"], "unknown profile 'nope'"),
    (["serve", "--model", "gpt2-small", "--hook", "blocks.8.hook_resid_pre"], "needs --model, --hook, --coarse and --fine"),
])
def test_serve_without_weights_fails_with_one_line(tmp_path, args, expect):
    proc = _run(args + ["--port", "18766"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr
    assert "serving" not in proc.stdout


def test_adhoc_serve_checks_the_pair(tmp_path):
    """An ad hoc profile over a local HF folder whose SAEs were trained on another hook: one line, no server."""
    import sae_lens as SL

    from app.engine.random_models import save_random_hf

    folder = save_random_hf("gpt2", tmp_path / "gpt2", n_layers=2)
    for name, width in (("c", 32), ("f", 64)):
        SL.StandardSAE(SL.StandardSAEConfig(d_in=64, d_sae=width, metadata=SL.saes.sae.SAEMetadata(
            hook_name="blocks.0.hook_resid_post"))).save_model(tmp_path / name)
    proc = _run(["serve", "--model", str(folder), "--hook", "blocks.1.hook_resid_pre", "--coarse", str(tmp_path / "c"),
                 "--fine", str(tmp_path / "f"), "--port", "18767"], tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "trained on blocks.0.hook_resid_post, not on the profile's hook blocks.1.hook_resid_pre" in errors[0]
