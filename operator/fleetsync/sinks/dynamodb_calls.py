"""One DynamoDB call, retried the way every DynamoDB call of the sink is.

botocore's own retries are off (``total_max_attempts: 1``) so that there is one policy, the
sink's (:mod:`fleetsync.sinks.retry`), and so that no failure escapes unclassified. An
answer falls in one of three kinds:

- transient — throttling, 5xx, connection errors, resets and timeouts: wait and try again
  until the budget is spent, then :class:`~fleetsync.errors.SinkError`;
- refused — DynamoDB judged the request itself (ValidationException, a failed condition):
  :class:`Refused`, which the sink narrows down to the one record to blame;
- anything else (no such table, access denied, no credentials): the sink is unusable,
  SinkError at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from fleetsync.errors import ManifestError, SinkError
from fleetsync.sinks.base import SinkCost
from fleetsync.sinks.retry import Attempts, SinkRetry

__all__ = ["Caller", "Refused"]

T = TypeVar("T")
THROTTLES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_TRANSIENT = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "RequestTimeout"}
)
_REFUSALS = frozenset(
    {
        "ValidationException",
        "SerializationException",
        "ConditionalCheckFailedException",
        "ItemCollectionSizeLimitExceededException",
    }
)
_UNUSABLE = (NoCredentialsError, PartialCredentialsError)


class Refused(Exception):
    """DynamoDB refused the request as such; retrying the same request cannot help."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Caller:
    """Runs boto3 calls (in the sink's worker threads) with the sink's retry budget."""

    def __init__(
        self,
        table: str,
        cost: SinkCost,
        policy: SinkRetry,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.cost = cost
        self.policy = policy
        self._sleep = sleep
        self._rng = rng or random.Random()

    def attempts(self) -> Attempts:
        return Attempts(self.policy, self._rng)

    def wait(self, tries: Attempts, what: str, cause: str) -> None:
        """Sleep before the next attempt, or raise SinkError when the budget is spent."""
        delay = tries.next_delay()
        if delay is None:
            raise SinkError(
                f"dynamodb {self.table}: {tries.gave_up(what, cause)}",
                field="spec.sink.dynamodb",
                hint="is DynamoDB (endpointUrl, region) reachable from here? Run again to resume",
            )
        self._sleep(delay)

    def call(
        self,
        tries: Attempts,
        what: str,
        fn: Callable[..., T],
        *,
        expected: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> T:
        """``fn(**kwargs)``, retried while transient; ``expected`` error codes (besides the
        refusals) are raised as :class:`Refused` for the caller to handle."""
        while True:
            self.cost.calls += 1
            try:
                return fn(**kwargs)
            except ClientError as error:
                cause = self._classify(error, what, expected)
            except ParamValidationError as error:
                raise Refused("ParamValidationError", str(error)) from None
            except _UNUSABLE as error:
                raise ManifestError(
                    [("spec.sink.dynamodb.credentialsSecretRef", f"{what}: {error}")],
                    hint="give AWS credentials: spec.sink.dynamodb.credentialsSecretRef, "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a workload identity "
                    "(spec.worker.serviceAccountName)",
                ) from None
            except BotoCoreError as error:  # connection refused/reset/closed, timeouts
                cause = f"{type(error).__name__}: {error}"
            self.wait(tries, what, cause)

    def _classify(self, error: ClientError, what: str, expected: frozenset[str]) -> str:
        """The cause of a transient error; raises for the other kinds."""
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        message = str(info.get("Message", "")) or code
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in THROTTLES:
            self.cost.throttles += 1
            return f"throttled ({code})"
        if code in _TRANSIENT or status >= 500:
            return f"{code or status}: {message}"
        if code in _REFUSALS or code in expected:
            raise Refused(code, message) from None
        raise SinkError(f"dynamodb {self.table}: {what}: {code}: {message}") from None
