"""ocpp16/handlers."""
