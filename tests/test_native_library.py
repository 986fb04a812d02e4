"""The llama_cpp that tests import must load OUR patched library, not a stock build."""

import ctypes

import llama_cpp
import llama_cpp.llama_cpp as lib_mod
import numpy as np


def test_loaded_library_exports_llama_skv_version():
    lib = lib_mod._lib
    assert hasattr(lib, "llama_skv_version"), f"stock libllama loaded from {lib._name}"
    fn = lib.llama_skv_version
    fn.argtypes = []
    fn.restype = ctypes.c_char_p
    version = fn().decode()
    assert version.startswith("skv "), version


def test_llama_cpp_python_is_our_wheel():
    assert llama_cpp.__version__.startswith("0.3.36+skv."), llama_cpp.__version__


def test_tiny_gguf_loads_and_generates(tiny_model_path):
    llm = llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=256, n_threads=2, verbose=False, seed=1)
    try:
        assert llm.n_vocab() == 32000
        out = llm.create_completion("Once upon a time", max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] > 0
        tokens = llm.tokenize(b"Hello world")
        assert tokens[0] == llm.token_bos()
        llm.reset()
        llm.eval(tokens)
        # the context's own logits of the last token: this llama-cpp-python's eval no longer copies them into
        # llm.scores without logits_all (that array is uninitialised memory: reading it made this test flaky)
        ptr = lib_mod.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
        assert all(abs(x) < 1e4 for x in logits[:100]), "activations out of range"
    finally:
        llm.close()


def test_tiny_gguf_attention_is_not_uniform(tiny_model_path):
    """Different context gives different next-token logits (peaked q/k weights), so budget tests can see it."""
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=str(tiny_model_path), n_ctx=256, n_threads=2, verbose=False, logits_all=True
    )
    try:
        a = llm.tokenize(b"The cat sat on the mat. The dog ran away.")
        b = llm.tokenize(b"A ship sails over the sea. The dog ran away.")
        llm.reset()
        llm.eval(a)
        la = np.array(llm.scores[len(a) - 1])
        llm.reset()
        llm.eval(b)
        lb = np.array(llm.scores[len(b) - 1])
        assert np.abs(la - lb).max() > 1e-3
    finally:
        llm.close()
