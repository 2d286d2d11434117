//! Integration tests of shoal-transport: in-process nodes over real TCP on loopback, port 0.
//! One test binary; each module covers one capability.

mod transport {
    pub(crate) mod support;

    mod cluster;
}
