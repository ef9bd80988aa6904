"""Where a mission's actors are found: one Ray namespace, names derived from the mission id."""

MISSION_NAMESPACE = "controlplane"
"""Ray namespace of supervisors, agents and memory actors, so `status` and `cancel` find them from any driver."""
