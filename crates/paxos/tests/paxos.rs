//! The one integration test binary of shoal-paxos: protocol rules checked message by message,
//! storage, membership changes, randomised simulations checked for linearisability, and the
//! driver over real TCP.

mod paxos {
    mod acceptor;
    mod driver;
    mod linearizability;
    mod membership;
    mod mutants;
    mod proposer;
    mod regressions;
    mod rejoin;
    mod sim;
    mod storage;
    mod walk;
    mod wire;
}
