"""controlplane: a control plane for fleets of LLM agents on Ray."""
