from hypothesis import HealthCheck, settings

# Kernels on 2 CPU cores vary in latency; property tests check values, not time.
settings.register_profile("edgenum", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("edgenum")

# `make test` runs two pytest workers on two cores: one intra-op thread each avoids OpenMP
# contention, which made small-tensor loops up to 10x slower.
import torch  # noqa: E402

torch.set_num_threads(1)
