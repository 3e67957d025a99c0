from hypothesis import HealthCheck, settings

# Kernels on 2 CPU cores vary in latency; property tests check values, not time.
settings.register_profile("edgenum", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("edgenum")
