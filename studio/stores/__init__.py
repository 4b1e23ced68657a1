"""State adapters: the only code that imports pymongo, redis, boto3 or secantus."""
