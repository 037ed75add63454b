"""`python -m oellm.suites.probe`, inside a suite's image: which of the asked tasks exist, which datasets
and NLTK data they load, answered by the suite itself (the login node's `oellm.suites.remote` asks)."""

from __future__ import annotations

import json
import sys
from typing import Any

from oellm.container import RESULT
from oellm.errors import OellmError
from oellm.suites import get_suite


def main() -> None:
    question = json.loads(sys.stdin.read())
    suite = get_suite(question["suite"])
    try:
        suite.validate(question["tasks"], question["sources"])
        answer: dict[str, Any] = {"datasets": suite.datasets(question["tasks"], question["sources"])}
        if hasattr(suite, "nltk_resources"):  # NLTK data the tasks download (oellm.cache.nltk_data)
            answer["nltk"] = suite.nltk_resources(question["tasks"], question["sources"])
    except OellmError as e:
        answer = {"error": str(e)}
    print(RESULT + json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
