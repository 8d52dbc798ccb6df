//! A streamlet topology for the end-to-end tests: the streamlet word count over a finite input (`--sentences`
//! sentences from a seed) on the local cluster. The sink appends every running count it receives to
//! `<out>/counts-<task>.log` (`word count` lines, flushed at once), so a test can check the final counts.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use egret::streamlet::{Builder, Sink, SourceContext};
use egret::*;
use egret_examples::reliable_word_count::sentences;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 20_000)]
    sentences: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    containers: u32,
}

/// Appends each `(word, count)` to a file of its task.
struct CountsLog {
    out: PathBuf,
    file: Option<std::fs::File>,
}

impl Sink<(String, u64)> for CountsLog {
    fn setup(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        std::fs::create_dir_all(&self.out)?;
        let path = self.out.join(format!("counts-{}.log", ctx.task_id()));
        self.file = Some(std::fs::OpenOptions::new().create(true).append(true).open(path)?);
        Ok(())
    }

    fn put(&mut self, (word, n): (String, u64)) -> Result<(), UserError> {
        let f = self.file.as_mut().ok_or("the sink was not set up")?;
        writeln!(f, "{word} {n}")?;
        Ok(())
    }
}

fn main() {
    let a = Args::parse();
    let (n, seed) = (a.sentences, a.seed);
    let b = Builder::new();
    b.new_source(move |cx: SourceContext| {
        sentences(n, seed)
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| i % cx.parallelism as usize == cx.index as usize)
            .map(|(_, s)| s)
    })
    .name("sentences")
    .parallelism(2)
    .flat_map(|s: String| s.split_whitespace().map(String::from).collect::<Vec<_>>())
    .name("split")
    .parallelism(2)
    .count_by_key(|w: &String| w.clone())
    .name("count")
    .parallelism(2)
    .to_sink({
        let out = a.out.clone();
        move || CountsLog {
            out: out.clone(),
            file: None,
        }
    })
    .name("sink");
    egret::run(b.build("streamlet-word-count", Config::new().with(keys::STMGRS, a.containers)))
}
