//! Flatpak index: cold parse of Pulp's body, warm per-client filter, gzip.
//!
//! `cargo bench -p container-gateway --bench index -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashSet;
use std::hint::black_box;

use bytes::Bytes;
use container_gateway::index::synth::{self, Spec};
use container_gateway::index::{UpstreamIndex, gzip};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 2] = [2_000, 20_000];
const REGISTRY: &str = "https://proxy.example.com/";

fn body(repos: usize) -> Bytes {
    Bytes::from(synth::index(&Spec::new(repos)))
}

fn parsed(body: &Bytes) -> UpstreamIndex {
    match UpstreamIndex::parse(body.clone()) {
        Ok(index) => index,
        Err(e) => panic!("synthetic index does not parse: {e}"),
    }
}

/// Every `every`-th repository, as an entitlement set would hold them.
fn visible_set(repos: usize, every: usize) -> HashSet<String> {
    (0..repos).step_by(every).map(synth::repo_name).collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("index/parse");
    group.sample_size(10);
    for repos in SIZES {
        let body = body(repos);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(repos), &body, |b, body| {
            b.iter(|| UpstreamIndex::parse(black_box(body.clone())))
        });
    }
    group.finish();
}

fn filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("index/filter");
    group.sample_size(10);
    for repos in SIZES {
        let index = parsed(&body(repos));
        for (label, every) in [("10pct", 10), ("100pct", 1)] {
            let visible = visible_set(repos, every);
            let is_visible = |name: &str| visible.contains(name);
            group.throughput(Throughput::Elements(repos as u64));
            group.bench_function(BenchmarkId::new(label, repos), |b| {
                b.iter(|| index.filter(REGISTRY, black_box(&is_visible)))
            });
        }
    }
    group.finish();
}

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("index/gzip");
    group.sample_size(10);
    let repos = 2_000;
    let out = parsed(&body(repos)).filter(REGISTRY, &|_| true);
    group.throughput(Throughput::Bytes(out.body.len() as u64));
    group.bench_with_input(BenchmarkId::from_parameter(repos), &out.body, |b, body| {
        b.iter(|| gzip(black_box(body)))
    });
    group.finish();
}

criterion_group!(benches, parse, filter, compress);
criterion_main!(benches);
