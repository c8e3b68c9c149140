"""The orchestrator's exception tree (one root, subclassing the runtime's)."""

from relance_runtime.errors import PermanentError, RelanceError


class OrchestratorError(RelanceError):
    """Root of every error raised by `relance_orchestrator`."""


class IllegalTransition(OrchestratorError, PermanentError):
    """An input the state machine does not allow; the state is left untouched."""


class PlanDefinitionError(OrchestratorError, PermanentError):
    """A plan file that cannot work (unknown step, bad anchor, duplicate name...)."""
