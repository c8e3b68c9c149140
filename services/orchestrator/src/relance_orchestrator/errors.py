"""Public exception tree of the orchestrator (defined in the pure domain)."""

from relance_orchestrator.domain.errors import (
    IllegalTransition,
    OrchestratorError,
    PlanDefinitionError,
)

__all__ = ["IllegalTransition", "OrchestratorError", "PlanDefinitionError"]
