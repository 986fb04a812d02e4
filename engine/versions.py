"""Which llama.cpp this process runs: the llama-cpp-python version, the llama.cpp commit it vendors, the SentenceKV
patch version of the library actually loaded (for `skv --version` and the benchmarks' machine record)."""

from __future__ import annotations

# The llama.cpp commit each llama-cpp-python release vendors (from its CHANGELOG); the sdist carries no git data.
VENDORED_LLAMA_CPP = {"0.3.36": "0c1e57098"}


def native_versions() -> dict[str, str]:
    """llama-cpp-python version, the llama.cpp commit it vendors, and the SentenceKV patch version.

    The patch version comes from `llama_skv_version` on the library llama_cpp actually loaded; "not loaded" if
    that library is a stock build (or llama_cpp cannot be imported).
    """
    out = {"llama_cpp_python": "not installed", "llama_cpp": "unknown", "native_patch": "not loaded"}
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as lib_mod
    except Exception as e:  # noqa: BLE001 - a broken install is reported, not raised
        out["llama_cpp_python"] = f"not importable ({type(e).__name__}: {e})"
        return out
    out["llama_cpp_python"] = getattr(llama_cpp, "__version__", "unknown")
    out["llama_cpp"] = VENDORED_LLAMA_CPP.get(out["llama_cpp_python"].split("+")[0], "unknown")
    lib = getattr(lib_mod, "_lib", None)
    if lib is not None:
        from engine.native import NativeError, check_native

        try:
            out["native_patch"] = check_native()
        except NativeError:
            pass
        try:
            info = lib_mod.llama_print_system_info()
            out["system_info"] = (
                info.decode(errors="replace").strip() if isinstance(info, bytes) else str(info)
            )
        except Exception:  # noqa: BLE001 - optional detail
            pass
    return out
