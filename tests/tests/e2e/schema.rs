//! The JSON Schema in the repository: a real trace passes it, and the
//! validator the tests use catches what a broken writer would produce.
use serde_json::Value;

use crate::common::*;

#[test]
fn a_real_trace_passes_the_schema_and_broken_ones_do_not() {
    let _root = require_root();
    let dir = scratch("schema");
    let workload = Workload::in_dir(&dir).size_mib(8).touch(0.5).leak(10);
    let trace = workload.traced(["--phase-truth"]).trace; // validated
    assert!(!trace.phases.is_empty() && !trace.leaks.is_empty());

    // Mutations of the very file memtrace wrote.
    let written = read_value(&workload.trace_path());
    let broken = dir.join("broken.json");
    type Mutation = fn(&mut Value);
    let mutations: [(&str, Mutation); 4] = [
        ("an unknown field", |t| t["counters"]["surprise"] = 1.into()),
        ("a negative count", |t| t["counters"]["page_faults"] = (-1).into()),
        ("a missing field", |t| {
            t.as_object_mut().unwrap().remove("stop_reason");
        }),
        ("another version", |t| t["version"] = 2.into()),
    ];
    for (what, mutate) in mutations {
        let mut t = written.clone();
        mutate(&mut t);
        std::fs::write(&broken, serde_json::to_string(&t).unwrap()).unwrap();
        assert!(schema_errors(&broken).is_err(), "the schema must reject {what}");
    }
}
