"""`salient-imagenet push` and `salient-imagenet check`."""


def run(args) -> int:
    if args.command == "push":
        return run_push(args.out, args.repo_id, args.public)
    return run_check(args.target, stream=not args.no_stream)


def run_push(out: str, repo_id: str | None, public: bool) -> int:
    from .upload import push

    repo_id = push(out, repo_id, private=not public)  # failures are UserErrors: one line and exit code 2/3/4
    from ..core.targets import hub_endpoint

    print(f"Pushed {out} to {hub_endpoint()}/datasets/{repo_id} "
          f"({'public' if public else 'private'}). Load it with load_dataset({repo_id!r}).")
    return 0


def run_check(target: str, stream: bool = True) -> int:
    from ..core.targets import resolve

    resolve(target, "check")  # "no such folder" before pyarrow and datasets are even imported
    from .validate import check

    problems = check(target, stream=stream)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{target}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
