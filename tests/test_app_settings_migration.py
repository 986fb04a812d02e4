"""Settings saved in the gemma-3 era move to the new built-in model's context once, with one notice; the default
context is lowered to what the memory estimate allows, with a note; a context the user chose stays as it is."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from app import settings as st


def _ini(tmp_path, **values) -> QSettings:
    qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    for k, v in values.items():
        qs.setValue(k, v)
    qs.sync()
    return qs


def test_gemma_era_context_is_migrated_once_with_a_notice(tmp_path):
    qs = _ini(tmp_path, n_ctx=8192, policy="sentence")
    notice = st.migrate_settings(qs)
    assert notice and "32768" in notice and "8192" in notice
    assert st.load_settings(qs).n_ctx == 32768
    assert st.migrate_settings(qs) is None  # said once
    qs.setValue("n_ctx", 8192)  # chosen again after the migration: kept
    assert st.migrate_settings(qs) is None and st.load_settings(qs).n_ctx == 8192


def test_a_context_the_user_chose_or_a_model_file_is_not_touched(tmp_path):
    qs = _ini(tmp_path / "a", n_ctx=4096)
    assert st.migrate_settings(qs) is None and st.load_settings(qs).n_ctx == 4096
    qs = _ini(tmp_path / "b", n_ctx=8192, model_path="/models/other.gguf")
    assert st.migrate_settings(qs) is None and st.load_settings(qs).n_ctx == 8192


def test_new_settings_start_at_32k_and_need_no_migration(tmp_path):
    qs = _ini(tmp_path)
    assert st.migrate_settings(qs) is None
    assert st.load_settings(qs).n_ctx == 32768 == st.DEFAULTS.n_ctx


def test_the_default_context_is_lowered_to_what_fits(tiny_model_path, monkeypatch):
    from engine import models

    assert st.fitting_ctx(str(tiny_model_path), 32768) == (32768, None)
    monkeypatch.setattr(models, "available_memory_bytes", lambda: 80 * 2**20)
    n, note = st.fitting_ctx(str(tiny_model_path), 32768)
    assert 2048 <= n < 32768 and n % 256 == 0 and note and str(n) in note
    info = models.read_model_info(tiny_model_path)
    assert models.estimate_memory(info, n).total_bytes_max <= 80 * 2**20
    assert st.fitting_ctx(str(tiny_model_path), 65536) == (
        65536,
        None,
    )  # chosen by the user: the engine decides


def test_the_picker_lists_the_installed_built_ins_with_memory_and_speed(default_model_path, gemma_model_path):
    choices = dict(st.builtin_choices(32768, threads=2))
    assert "qwen2.5-coder-0.5b" in choices and "gemma-3-270m" in choices
    label = choices["qwen2.5-coder-0.5b"]
    assert "Qwen2.5-Coder-0.5B-Instruct" in label and "GiB at 32768 tokens" in label and "tokens/s" in label
    # the KV estimate comes from the header: 24 layers x 2 KV heads x (64 + 64) x 2 bytes x 32768 = 384 MiB
    assert "up to 0.8 GiB" in label, label
    from engine.models import BUILTIN_MODELS

    big, small = BUILTIN_MODELS["qwen2.5-coder-1.5b"], BUILTIN_MODELS["qwen2.5-coder-0.5b"]
    assert big.decode_tok_s_estimate() < small.decode_tok_s_estimate()
