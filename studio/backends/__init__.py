"""Compute adapters: the only code importing ray.job_submission, ray.serve deployments, kubernetes."""
