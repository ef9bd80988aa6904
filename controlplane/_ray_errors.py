"""Ray's wrapper taken off an error."""

from ray.exceptions import RayTaskError


def cause_of(exc: BaseException) -> BaseException:
    """The exception a remote call raised, which Ray wraps in a RayTaskError; `exc` itself when there is none."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc
