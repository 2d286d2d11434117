//! The one integration test binary of shoal-paxos: protocol rules checked message by message,
//! storage, membership changes, and randomised simulations checked for linearisability.

mod paxos {
    mod acceptor;
    mod linearizability;
    mod membership;
    mod proposer;
    mod sim;
    mod storage;
    mod wire;
}
