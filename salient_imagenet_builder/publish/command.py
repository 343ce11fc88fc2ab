"""`salient-imagenet push` and `salient-imagenet check`."""

import logging

log = logging.getLogger("salient_imagenet_builder")


def run(args) -> int:
    if args.command == "push":
        return run_push(args.out, args.repo_id, args.public)
    return run_check(args.target, stream=not args.no_stream)


def run_push(out: str, repo_id: str | None, public: bool) -> int:
    from .push import PushError, push

    try:
        repo_id = push(out, repo_id, private=not public)
    except PushError as e:
        log.error("%s", e)
        return 3
    print(f"Pushed {out} to https://huggingface.co/datasets/{repo_id} "
          f"({'public' if public else 'private'}). Load it with load_dataset({repo_id!r}).")
    return 0


def run_check(target: str, stream: bool = True) -> int:
    from .check import check

    problems = check(target, stream=stream)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{target}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
