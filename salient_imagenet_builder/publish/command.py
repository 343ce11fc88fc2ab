"""`salient-imagenet push` and `salient-imagenet check`."""

from ..core.targets import hub_endpoint, resolve
from .options import CheckConfig, PushConfig
from .upload import push
from .validate import check

__all__ = ["run_check", "run_check_command", "run_push", "run_push_command"]


def run_push_command(config: PushConfig) -> int:
    return run_push(config.out, config.repo_id, config.public)


def run_check_command(config: CheckConfig) -> int:
    return run_check(config.target, config.stream)


def run_push(out: str, repo_id: str | None, public: bool) -> int:
    repo_id = push(out, repo_id, private=not public)  # failures are UserErrors: one line and exit code 2/3/4
    print(f"Pushed {out} to {hub_endpoint()}/datasets/{repo_id} "
          f"({'public' if public else 'private'}). Load it with load_dataset({repo_id!r}).")
    return 0


def run_check(target: str, stream: bool = True) -> int:
    resolve(target, "check")  # "no such folder" (or a half-replaced folder) as one line, before any file is read
    problems = check(target, stream=stream)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{target}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
