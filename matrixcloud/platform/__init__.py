"""The platform endpoints (health, readiness, capabilities, runtimes, catalog, policies,
storage): roof, since they describe what every app contributes."""
