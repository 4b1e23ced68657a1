"""HTTP layer: FastAPI only. Routes translate; services decide."""
