"""The seed's KPI table: DORA and pipeline quality from GitHub, beside the monitor's own
figures (MTTR, staging health). ``records`` holds the data read from GitHub, ``maths``
the pure computation, ``github`` and ``sync`` the incremental reading, ``table`` the
assembly from the store, ``report`` the text a reviewer reads."""
