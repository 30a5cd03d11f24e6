"""The password hasher of the test process: Argon2id at its lowest cost.

The service hashes with Django's Argon2id (100 MiB, two passes, eight lanes: 0.2 s a
hash here), and the suite signs up and signs in hundreds of users. This one is the same
algorithm under the same name, so every hash it writes has the service's ``argon2$argon2id$``
form and verifies in the processes the tests start (which keep the service's cost), and
theirs verify here: each hash carries its own parameters.
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class CheapArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 64  # KiB
    parallelism = 1
