//! sumun-testkit
