//! Process factories and child specs: starting processes from data.

use std::time::Duration;

use shoal_process::codec::{decode, encode};
use shoal_process::{
    ChildSpec, Context, ExitReason, FactoryError, Process, Restart, Shutdown, SpawnError,
    SpawnOptions, StartError,
};

use crate::support::{Calc, CalcReq, runtime, within};

/// Fails its init with the reason it was built with.
struct Refuser(String);

impl Process for Refuser {
    type Message = ();
    type Call = ();
    type Reply = ();

    async fn init(&mut self, _: &mut Context<Self>) -> Result<(), ExitReason> {
        Err(ExitReason::custom(&self.0))
    }

    async fn handle_cast(&mut self, _: (), _: &mut Context<Self>) {}
}

// Factories build a behaviour from msgpack start arguments (spawn_factory, start_factory).
#[tokio::test]
async fn a_factory_builds_processes_from_encoded_arguments() {
    let runtime = runtime();
    runtime.register_factory("calc", Calc::new).unwrap();
    runtime.register_factory("refuser", Refuser).unwrap();
    assert_eq!(runtime.factory_names(), ["calc", "refuser"]);

    let args = encode(&40u64).unwrap();
    let spawned = runtime.spawn_factory("calc", &args, SpawnOptions::new()).unwrap();
    let total: u64 =
        within(runtime.call(spawned, CalcReq::Get, Duration::from_secs(5))).await.unwrap();
    assert_eq!(total, 40);

    let options = SpawnOptions::new().name("calc-2");
    let started = within(runtime.start_factory("calc", &encode(&2u64).unwrap(), options)).await;
    let started = started.unwrap();
    assert_eq!(runtime.whereis("calc-2"), Some(started));
    let calc = runtime.addr::<Calc>(started).expect("a Calc");
    assert_eq!(within(calc.call(CalcReq::Get)).await, Ok(2));

    let args = encode("no").unwrap();
    let refused = runtime.start_factory("refuser", &args, SpawnOptions::new());
    assert_eq!(within(refused).await, Err(StartError::Init(ExitReason::custom("no"))));
}

// Spawning from data: an unknown factory or undecodable arguments is refused; nothing starts.
#[tokio::test]
async fn unknown_factories_and_bad_arguments_are_refused() {
    let runtime = runtime();
    runtime.register_factory("calc", Calc::new).unwrap();
    let args = encode(&1u64).unwrap();
    assert_eq!(
        runtime.spawn_factory("nope", &args, SpawnOptions::new()),
        Err(SpawnError::UnknownFactory("nope".to_owned()))
    );
    let started = within(runtime.start_factory("nope", &args, SpawnOptions::new())).await;
    assert_eq!(started, Err(StartError::Spawn(SpawnError::UnknownFactory("nope".to_owned()))));
    for bad in [encode("forty").unwrap().to_vec(), vec![0xc1], Vec::new()] {
        match runtime.spawn_factory("calc", &bad, SpawnOptions::new()) {
            Err(SpawnError::BadArgs { factory, .. }) => assert_eq!(factory, "calc"),
            other => panic!("expected BadArgs for {bad:?}, got {other:?}"),
        }
        match within(runtime.start_factory("calc", &bad, SpawnOptions::new())).await {
            Err(StartError::Spawn(SpawnError::BadArgs { factory, .. })) => {
                assert_eq!(factory, "calc");
            }
            other => panic!("expected BadArgs for {bad:?}, got {other:?}"),
        }
    }
    assert_eq!(runtime.process_count(), 0);
}

// A factory name is registered once; names must be 1 to 255 bytes.
#[tokio::test]
async fn a_factory_name_is_taken_once() {
    let runtime = runtime();
    runtime.register_factory("calc", Calc::new).unwrap();
    assert_eq!(
        runtime.register_factory("calc", |_: ()| Calc::new(0)),
        Err(FactoryError::Taken("calc".to_owned()))
    );
    assert_eq!(
        runtime.register_factory("", Calc::new),
        Err(FactoryError::InvalidName(String::new()))
    );
    assert_eq!(runtime.factory_names(), ["calc"]);
}

// A ChildSpec is data: it round-trips through the codec and starts the child it describes.
#[tokio::test]
async fn a_child_spec_round_trips_and_starts_its_child() {
    let runtime = runtime();
    runtime.register_factory("calc", Calc::new).unwrap();
    let spec = ChildSpec::new("counter-1", "calc", &7u64)
        .unwrap()
        .restart(Restart::Transient)
        .shutdown(Shutdown::Timeout(Duration::from_millis(250)));
    let decoded: ChildSpec = decode(&encode(&spec).unwrap()).unwrap();
    assert_eq!(decoded, spec);
    let brutal = ChildSpec::new("counter-2", "calc", &8u64).unwrap().shutdown(Shutdown::BrutalKill);
    assert_eq!(decode::<ChildSpec>(&encode(&brutal).unwrap()).unwrap(), brutal);

    let started = runtime.start_factory(&decoded.factory, &decoded.args, SpawnOptions::new());
    let pid = within(started).await.unwrap();
    let total: u64 = within(runtime.call(pid, CalcReq::Get, Duration::from_secs(5))).await.unwrap();
    assert_eq!(total, 7);
}

// A factory whose build panics (a configuration that does not load, say) fails that spawn
// with BuildPanicked and the panic's message; the caller (a supervisor, a transport serving a
// remote spawn) lives on, and nothing was started.
#[tokio::test]
async fn a_factory_whose_build_panics_fails_the_spawn() {
    let runtime = runtime();
    runtime
        .register_factory("broken", |path: String| -> Calc {
            panic!("cannot load {path}");
        })
        .unwrap();
    let args = encode("app.toml").unwrap();
    let panicked = SpawnError::BuildPanicked("cannot load app.toml".to_owned());
    assert_eq!(runtime.spawn_factory("broken", &args, SpawnOptions::new()), Err(panicked.clone()));
    let started = within(runtime.start_factory("broken", &args, SpawnOptions::new())).await;
    assert_eq!(started, Err(StartError::Spawn(panicked)));
    assert_eq!(runtime.process_count(), 0);
}
