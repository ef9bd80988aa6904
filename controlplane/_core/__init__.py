"""Mission logic with no Ray and no I/O; time is passed in. The actors are thin shells around it."""
