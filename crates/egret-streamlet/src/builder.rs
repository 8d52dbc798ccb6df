//! [`Builder`] and [`Streamlet`]: the graph a user writes, and its compilation to a topology.
//!
//! Each streamlet becomes one component (a spout for a source, a bolt for an operator) named after its operator and
//! number (`map-3`) unless [`Streamlet::name`] says otherwise, with [`Streamlet::parallelism`] tasks (default 1). A
//! child subscribes to its parent with a shuffle grouping, a keyed operator with a fields grouping on the key its
//! parent computed, `repartition_with` with a custom grouping. Element types are checked by the compiler: a
//! `Streamlet<String>` only accepts functions of `String`.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use egret_api::{
    Config, CustomGrouping, Grouping, Spout, TaskId, Topology, TopologyBuilder, TopologyErrors, Tuple, UserError, keys,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::component::{
    Next, OutStream, Outputs, SourceContext, StreamletBolt, StreamletSpout, Supplier, SupplierFactory, TimestampFn,
    WATERMARK_PREFIX, decode,
};
use crate::ops;
use crate::spout_source::{ElementFn, SpoutSource};
use crate::window::Window;
use crate::windowed::{
    Aggregate, JoinFn, JoinSide, JoinType, WindowOp, WindowSpec, Windowed, decode_fn, join_aggregate,
};

/// What a streamlet's elements must be: any serde type that can be cloned and sent between threads.
pub trait Element: Serialize + DeserializeOwned + Clone + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> Element for T {}

/// How a child reads its parent.
#[derive(Clone)]
enum Edge {
    Shuffle,
    /// Fields grouping on `k` of the parent's stream for this child.
    Keyed,
    /// The same, for a child that reads only the key (`v` is left empty).
    KeyOnly,
    /// Every task of an event-time windowed child gets the parent tasks' watermarks.
    Watermark,
    Custom(Arc<dyn CustomGrouping>),
}

/// A node's component as the topology gets it.
pub(crate) struct Spec {
    name: String,
    parallelism: u32,
    /// (component, stream, grouping).
    inputs: Vec<(String, String, Grouping)>,
    config: Vec<(String, String)>,
}

/// Adds the component of a node to the topology, given its spec and its outputs: its own (a `Vec<OutStream<T>>`),
/// then those of its views (e.g. a window's late elements), in order.
type Make = Box<dyn Fn(&mut TopologyBuilder, Spec, &[&dyn Any])>;

/// Adds an operator's bolt with its subscriptions and config.
fn add_bolt<B, F>(b: &mut TopologyBuilder, spec: Spec, factory: F)
where
    B: egret_api::Bolt,
    F: Fn() -> B + Send + Sync + 'static,
{
    let mut d = b.set_bolt(spec.name, spec.parallelism, factory);
    for (c, s, g) in spec.inputs {
        d = d.grouping(c, s, g);
    }
    for (k, v) in spec.config {
        d = d.config(k, v);
    }
}

struct Node {
    op: &'static str,
    name: Option<String>,
    parallelism: u32,
    /// (parent, how, the parent's stream this node reads).
    parents: Vec<(usize, Edge, String)>,
    /// A view is a second output of another node's component (a window's late elements): it has no component of its
    /// own, and its streams' names start with `stream_prefix`.
    view_of: Option<usize>,
    stream_prefix: &'static str,
    /// `Vec<OutStream<T>>` of the node's element type: grows as children subscribe.
    outputs: Box<dyn Any>,
    make: Make,
    /// Component config (tick frequency for operators on time).
    config: Vec<(String, String)>,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
}

/// Builds a streamlet graph; [`Builder::build`] compiles it into a [`Topology`].
#[derive(Clone, Default)]
pub struct Builder {
    graph: Rc<RefCell<Graph>>,
}

/// A stream of elements of type `T`. Operators return new streamlets; the same streamlet may feed several children
/// (each gets every element).
pub struct Streamlet<T> {
    graph: Rc<RefCell<Graph>>,
    id: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Streamlet<T> {
    fn clone(&self) -> Self {
        Streamlet {
            graph: Rc::clone(&self.graph),
            id: self.id,
            _t: PhantomData,
        }
    }
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A source whose task `i` of `n` reads the iterator `f(SourceContext { index: i, parallelism: n })`; the source
    /// ends when the iterator does.
    ///
    /// Under effectively-once the source's position is the number of elements taken: after a rollback the iterator
    /// is made again and that many elements are skipped, so it must yield the same sequence each time it is made
    /// (read a file, generate from a seed, consume a log from an offset).
    pub fn new_source<T, I, F>(&self, f: F) -> Streamlet<T>
    where
        T: Element,
        I: Iterator<Item = T> + Send + 'static,
        F: Fn(SourceContext) -> I + Send + Sync + 'static,
    {
        self.source(Arc::new(move |cx| {
            let mut iter = f(cx);
            Box::new(move || iter.next().map_or(Next::Ended, Next::Item)) as Supplier<T>
        }))
    }

    /// A source whose task `i` of `n` calls the supplier `f(SourceContext { index: i, parallelism: n })` for each
    /// element (Heron's `newSource(Supplier)`): `Some(element)`, or `None` for nothing now (asked again soon, after the
    /// spout wait). It never ends. Replayed under effectively-once as [`Builder::new_source`] is.
    pub fn new_source_fn<T, G, F>(&self, f: F) -> Streamlet<T>
    where
        T: Element,
        G: FnMut() -> Option<T> + Send + 'static,
        F: Fn(SourceContext) -> G + Send + Sync + 'static,
    {
        self.source(Arc::new(move |cx| {
            let mut g = f(cx);
            Box::new(move || g().map_or(Next::NotNow, Next::Item)) as Supplier<T>
        }))
    }

    /// A source made from any spout (Heron's `newSource(IRichSpout)`): each task runs a spout from `make`, and every
    /// tuple it emits becomes an element through `element(&tuple)` (an error drops the tuple: it is reported, and
    /// failed to the spout if it had a message id). The spout keeps its own reliability and state: under
    /// at-least-once its message ids are the elements' (its `ack` and `fail` are called), under effectively-once its
    /// `stateful()` is checkpointed and restored, so a spout that seeks to its restored position replays exactly.
    pub fn new_spout_source<T, S>(
        &self,
        make: impl Fn() -> S + Send + Sync + 'static,
        element: impl Fn(&Tuple<'_>) -> Result<T, UserError> + Send + Sync + 'static,
    ) -> Streamlet<T>
    where
        T: Element,
        S: Spout + 'static,
    {
        let make = Arc::new(make);
        let element: ElementFn<T> = Arc::new(element);
        self.add_source(Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<T>(outputs, 0);
            let (make, element) = (Arc::clone(&make), Arc::clone(&element));
            b.set_spout(spec.name, spec.parallelism, move || {
                SpoutSource::new(make(), Arc::clone(&element), Outputs::new(outputs.clone()))
            });
        }))
    }

    fn source<T: Element>(&self, make_supplier: SupplierFactory<T>) -> Streamlet<T> {
        self.add_source(Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<T>(outputs, 0);
            let make_supplier = Arc::clone(&make_supplier);
            b.set_spout(spec.name, spec.parallelism, move || {
                StreamletSpout::new(Arc::clone(&make_supplier), Outputs::new(outputs.clone()))
            });
        }))
    }

    fn add_source<T: Element>(&self, make: Make) -> Streamlet<T> {
        let id = self.add(Node {
            op: "source",
            name: None,
            parallelism: 1,
            parents: Vec::new(),
            view_of: None,
            stream_prefix: "",
            outputs: Box::new(Vec::<OutStream<T>>::new()),
            make,
            config: Vec::new(),
        });
        Streamlet {
            graph: Rc::clone(&self.graph),
            id,
            _t: PhantomData,
        }
    }

    fn add(&self, node: Node) -> usize {
        let mut g = self.graph.borrow_mut();
        g.nodes.push(node);
        g.nodes.len() - 1
    }

    /// Compiles the graph into a topology named `name` with `config` (e.g. `topology.reliability.mode`).
    pub fn build(&self, name: &str, config: Config) -> Result<Topology, TopologyErrors> {
        let g = self.graph.borrow();
        let names: Vec<String> = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| n.name.clone().unwrap_or_else(|| format!("{}-{}", n.op, i + 1)))
            .collect();
        let mut b = TopologyBuilder::new(name);
        b.set_config(config);
        for (i, n) in g.nodes.iter().enumerate() {
            if n.view_of.is_some() {
                continue;
            }
            let inputs = n
                .parents
                .iter()
                .map(|(p, edge, stream)| {
                    let component = names[g.nodes[*p].view_of.unwrap_or(*p)].clone();
                    let grouping = match edge {
                        Edge::Shuffle => Grouping::Shuffle,
                        Edge::Keyed | Edge::KeyOnly => Grouping::fields(["k"]),
                        Edge::Watermark => Grouping::All,
                        Edge::Custom(c) => Grouping::Custom(Arc::clone(c)),
                    };
                    (component, stream.clone(), grouping)
                })
                .collect();
            let spec = Spec {
                name: names[i].clone(),
                parallelism: n.parallelism,
                inputs,
                config: n.config.clone(),
            };
            let mut outputs: Vec<&dyn Any> = vec![&*n.outputs];
            outputs.extend(g.nodes.iter().filter(|v| v.view_of == Some(i)).map(|v| &*v.outputs));
            (n.make)(&mut b, spec, &outputs);
        }
        b.build()
    }
}

/// The stream a node emits for its unkeyed children (`default`, or `<prefix>default` for a view).
fn default_stream(prefix: &str) -> String {
    format!("{prefix}{}", egret_api::DEFAULT_STREAM)
}

/// The stream a node emits for its keyed child `child`, with the child's key.
fn keyed_stream(prefix: &str, child: usize) -> String {
    format!("{prefix}key-{}", child + 1)
}

/// The `i`-th outputs given to a `Make` (0: the node's own), as the element type they were made with.
fn outputs_of<T: 'static>(outputs: &[&dyn Any], i: usize) -> Vec<OutStream<T>> {
    outputs
        .get(i)
        .and_then(|o| o.downcast_ref::<Vec<OutStream<T>>>())
        .cloned()
        .unwrap_or_default()
}

impl<T: Element> Streamlet<T> {
    /// Names the streamlet's component (in `egret explain`, the tracker and the UI).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.graph.borrow_mut().nodes[self.id].name = Some(name.into());
        self
    }

    /// How many tasks run this streamlet (Heron's `setNumPartitions`; default 1).
    pub fn parallelism(self, n: u32) -> Self {
        self.graph.borrow_mut().nodes[self.id].parallelism = n;
        self
    }

    /// A child of this streamlet reading it through `edge`; for a keyed edge `key` computes the key from the element.
    fn child<U: Element>(
        &self,
        op: &'static str,
        edge: Edge,
        key: Option<crate::component::KeyFn<T>>,
        make: Make,
    ) -> Streamlet<U> {
        self.child_of(&[(self.id, edge)], op, key, make)
    }

    fn child_of<U: Element>(
        &self,
        parents: &[(usize, Edge)],
        op: &'static str,
        key: Option<crate::component::KeyFn<T>>,
        make: Make,
    ) -> Streamlet<U> {
        let mut g = self.graph.borrow_mut();
        let id = g.nodes.len();
        let mut read = Vec::new();
        for (p, edge) in parents {
            let prefix = g.nodes[*p].stream_prefix;
            let Some(outs) = g.nodes[*p].outputs.downcast_mut::<Vec<OutStream<T>>>() else {
                continue;
            };
            let stream = match edge {
                Edge::Keyed | Edge::KeyOnly => {
                    let stream = keyed_stream(prefix, id);
                    outs.push(OutStream {
                        stream: stream.clone(),
                        key: key.clone(),
                        value: matches!(edge, Edge::Keyed),
                        watermark: None,
                    });
                    stream
                }
                // Added by `watermarks_to`, never through `child_of`.
                Edge::Watermark => continue,
                Edge::Shuffle | Edge::Custom(_) => {
                    let stream = default_stream(prefix);
                    if !outs.iter().any(|o| o.key.is_none()) {
                        outs.push(OutStream {
                            stream: stream.clone(),
                            key: None,
                            value: true,
                            watermark: None,
                        });
                    }
                    stream
                }
            };
            read.push((*p, edge.clone(), stream));
        }
        g.nodes.push(Node {
            op,
            name: None,
            parallelism: 1,
            parents: read,
            view_of: None,
            stream_prefix: "",
            outputs: Box::new(Vec::<OutStream<U>>::new()),
            make,
            config: Vec::new(),
        });
        drop(g);
        Streamlet {
            graph: Rc::clone(&self.graph),
            id,
            _t: PhantomData,
        }
    }

    /// A child computed by a per-task function of each element: `f` is called once per task to make the function,
    /// which pushes zero or more outputs per element.
    fn per_element<U: Element, G>(&self, op: &'static str, edge: Edge, f: G) -> Streamlet<U>
    where
        G: Fn() -> ops::ElementFn<T, U> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let make: Make = Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<U>(outputs, 0);
            let f = Arc::clone(&f);
            add_bolt(b, spec, move || {
                StreamletBolt::new(Box::new(ops::PerElement::new(f(), Outputs::new(outputs.clone()))))
            });
        });
        self.child(op, edge, None, make)
    }

    /// One output per element.
    pub fn map<U: Element>(&self, f: impl Fn(T) -> U + Send + Sync + Clone + 'static) -> Streamlet<U> {
        self.per_element("map", Edge::Shuffle, move || {
            let f = f.clone();
            Box::new(move |x, out: &mut Vec<U>| out.push(f(x)))
        })
    }

    /// Zero or more outputs per element.
    pub fn flat_map<U: Element, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + Clone + 'static,
    ) -> Streamlet<U> {
        self.per_element("flat-map", Edge::Shuffle, move || {
            let f = f.clone();
            Box::new(move |x, out: &mut Vec<U>| out.extend(f(x)))
        })
    }

    /// The elements for which `f` holds.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + Clone + 'static) -> Streamlet<T> {
        self.per_element("filter", Edge::Shuffle, move || {
            let f = f.clone();
            Box::new(move |x, out: &mut Vec<T>| {
                if f(&x) {
                    out.push(x)
                }
            })
        })
    }

    /// `(key, value)` pairs (Heron's `keyBy`, a `KVStreamlet`).
    pub fn key_by<K: Element, V: Element>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + Clone + 'static,
        value: impl Fn(T) -> V + Send + Sync + Clone + 'static,
    ) -> Streamlet<(K, V)> {
        self.per_element("key-by", Edge::Shuffle, move || {
            let (key, value) = (key.clone(), value.clone());
            Box::new(move |x, out: &mut Vec<(K, V)>| out.push((key(&x), value(x))))
        })
    }

    /// The same elements over `n` tasks, spread round robin.
    pub fn repartition(&self, n: u32) -> Streamlet<T> {
        self.per_element("repartition", Edge::Shuffle, || {
            Box::new(|x, out: &mut Vec<T>| out.push(x))
        })
        .parallelism(n)
    }

    /// The same elements over `n` tasks, each sent to the tasks `f(&element, n)` names (indexes below `n`; others are
    /// ignored).
    pub fn repartition_with(&self, n: u32, f: impl Fn(&T, u32) -> Vec<u32> + Send + Sync + 'static) -> Streamlet<T> {
        let grouping = Edge::Custom(Arc::new(Partitioner {
            f: Box::new(f),
            _t: PhantomData,
        }));
        self.per_element("repartition", grouping, || Box::new(|x, out: &mut Vec<T>| out.push(x)))
            .parallelism(n)
    }

    /// `n` streamlets with this one's elements, each to be given operators of its own (Heron's `clone`).
    pub fn clone_n(&self, n: usize) -> Vec<Streamlet<T>> {
        (0..n).map(|_| self.clone()).collect()
    }

    /// The elements of this streamlet and of `other`.
    pub fn union(&self, other: &Streamlet<T>) -> Streamlet<T> {
        let f = Arc::new(|| Box::new(|x, out: &mut Vec<T>| out.push(x)) as ops::ElementFn<T, T>);
        let make: Make = Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<T>(outputs, 0);
            let f = Arc::clone(&f);
            add_bolt(b, spec, move || {
                StreamletBolt::new(Box::new(ops::PerElement::new(f(), Outputs::new(outputs.clone()))))
            });
        });
        self.child_of(
            &[(self.id, Edge::Shuffle), (other.id, Edge::Shuffle)],
            "union",
            None,
            make,
        )
    }

    /// A custom operator with state: `make` is called once per task (Heron's `transform`).
    pub fn transform<U: Element, X: ops::Transformer<T, U>>(
        &self,
        make: impl Fn() -> X + Send + Sync + 'static,
    ) -> Streamlet<U> {
        let make = Arc::new(make);
        let m: Make = Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<U>(outputs, 0);
            let make = Arc::clone(&make);
            add_bolt(b, spec, move || {
                StreamletBolt::new(Box::new(ops::Transform::new(make(), Outputs::new(outputs.clone()))))
            });
        });
        self.child("transform", Edge::Shuffle, None, m)
    }

    /// A running reduce per key: for every element, the key's value so far combined with the element's value by
    /// `op`, emitted as `(key, reduced)` (Heron's `reduceByKey`). The reduced values are operator state.
    pub fn reduce_by_key<K: Element + Eq + std::hash::Hash, V: Element>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        value: impl Fn(T) -> V + Send + Sync + Clone + 'static,
        op: impl Fn(V, V) -> V + Send + Sync + Clone + 'static,
    ) -> Streamlet<(K, V)> {
        let m: Make = Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<(K, V)>(outputs, 0);
            let (value, op) = (value.clone(), op.clone());
            add_bolt(b, spec, move || {
                let reduce = ops::ReduceByKey::<T, K, V>::new(
                    Box::new(value.clone()),
                    Box::new(op.clone()),
                    Outputs::new(outputs.clone()),
                );
                StreamletBolt::new(Box::new(reduce))
            });
        });
        self.child("reduce-by-key", Edge::Keyed, Some(encoded_key(key)), m)
    }

    /// A running count per key, emitted as `(key, count)` for every element (Heron's `countByKey`). Counts are kept
    /// by the key's encoded bytes: elements are not decoded to be counted.
    pub fn count_by_key<K: Element>(&self, key: impl Fn(&T) -> K + Send + Sync + 'static) -> Streamlet<(K, u64)> {
        let m: Make = Box::new(move |b, spec, outputs| {
            let outputs = outputs_of::<(K, u64)>(outputs, 0);
            add_bolt(b, spec, move || {
                StreamletBolt::new(Box::new(ops::CountByKey::<K>::new(Outputs::new(outputs.clone()))))
            });
        });
        self.child("count-by-key", Edge::KeyOnly, Some(encoded_key(key)), m)
    }

    /// Per key and window, the values of the elements reduced with `op` (Heron's `reduceByKeyAndWindow`); see
    /// [`WindowSpec`] for the windows, the time and the lateness. Elements too late for any window go to
    /// [`Windowed::late`].
    pub fn reduce_by_key_and_window<K: Element, V: Element + Serialize + DeserializeOwned>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        value: impl Fn(T) -> V + Send + Sync + 'static,
        spec: WindowSpec<T>,
        op: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Windowed<K, V, T> {
        let op = Arc::new(op);
        let (fold_op, merge_op) = (Arc::clone(&op), op);
        let agg: Aggregate<T, V, Option<V>, V> = Aggregate {
            decode: decode_fn(),
            value: Arc::new(value),
            without_element: None,
            init: Arc::new(|| None),
            fold: Arc::new(move |a: &mut Option<V>, v: &V| {
                *a = Some(match a.take() {
                    None => v.clone(),
                    Some(x) => fold_op(x, v.clone()),
                })
            }),
            merge: Arc::new(move |a: &mut Option<V>, b: Option<V>| {
                *a = match (a.take(), b) {
                    (Some(x), Some(y)) => Some(merge_op(x, y)),
                    (x, y) => x.or(y),
                }
            }),
            finish: Arc::new(|a: Option<V>| a.into_iter().collect()),
        };
        self.windowed("reduce-by-key-and-window", key, spec, agg)
    }

    /// Per key and window, how many elements (Heron's `countByKeyAndWindow`).
    pub fn count_by_key_and_window<K: Element>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        spec: WindowSpec<T>,
    ) -> Windowed<K, u64, T> {
        let agg: Aggregate<T, (), u64, u64> = Aggregate {
            decode: decode_fn(),
            value: Arc::new(|_| ()),
            without_element: Some(Arc::new(|| ())),
            init: Arc::new(|| 0),
            fold: Arc::new(|a: &mut u64, _: &()| *a += 1),
            merge: Arc::new(|a: &mut u64, b: u64| *a += b),
            finish: Arc::new(|n| vec![n]),
        };
        self.windowed("count-by-key-and-window", key, spec, agg)
    }

    fn windowed<K: Element, V: Send + 'static, A, O: Element>(
        &self,
        op: &'static str,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
        spec: WindowSpec<T>,
        agg: Aggregate<T, V, A, O>,
    ) -> Windowed<K, O, T>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let timestamp = spec.timestamp.clone();
        // A count in processing time reads only the key: the element is not sent.
        let edge = if timestamp.is_none() && agg.without_element.is_some() {
            Edge::KeyOnly
        } else {
            Edge::Keyed
        };
        let m = window_make::<T, K, V, A, O>(spec, move |_| agg.clone());
        let results: Streamlet<(K, Window, O)> = self.child(op, edge, Some(encoded_key(key)), m);
        if let Some(ts) = timestamp {
            self.watermarks_to(results.id, ts);
        }
        let late = results.add_late_view::<T>();
        Windowed { results, late }
    }

    /// A windowed join of this streamlet (left) and `other` (right) on a key: per key and window, `f` of every
    /// (left, right) pair, and for outer joins of the elements without a partner (`None` on the other side), as
    /// [`JoinType`] says (Heron's `join`). The window spec's timestamps, for event time, take a [`JoinSide`].
    pub fn join<R: Element, K: Element, J: Element>(
        &self,
        other: &Streamlet<R>,
        this_key: impl Fn(&T) -> K + Send + Sync + 'static,
        other_key: impl Fn(&R) -> K + Send + Sync + 'static,
        spec: WindowSpec<JoinSide<T, R>>,
        join_type: JoinType,
        f: impl Fn(Option<T>, Option<R>) -> J + Send + Sync + 'static,
    ) -> Windowed<K, J, JoinSide<T, R>> {
        let f: JoinFn<T, R, J> = Arc::new(f);
        let timestamp = spec.timestamp.clone();
        // The left side is told apart from the right by its component's name, known when the topology is built.
        let m = window_make::<JoinSide<T, R>, K, JoinSide<T, R>, (Vec<T>, Vec<R>), J>(spec, move |left_component| {
            join_aggregate(left_component, join_type, Arc::clone(&f))
        });
        let mut g = self.graph.borrow_mut();
        let id = g.nodes.len();
        let mut read = Vec::new();
        let left_stream = keyed_stream(g.nodes[self.id].stream_prefix, id);
        if let Some(outs) = g.nodes[self.id].outputs.downcast_mut::<Vec<OutStream<T>>>() {
            outs.push(OutStream {
                stream: left_stream.clone(),
                key: Some(encoded_key(this_key)),
                value: true,
                watermark: None,
            });
        }
        read.push((self.id, Edge::Keyed, left_stream));
        let right_stream = keyed_stream(g.nodes[other.id].stream_prefix, id);
        if let Some(outs) = g.nodes[other.id].outputs.downcast_mut::<Vec<OutStream<R>>>() {
            outs.push(OutStream {
                stream: right_stream.clone(),
                key: Some(encoded_key(other_key)),
                value: true,
                watermark: None,
            });
        }
        read.push((other.id, Edge::Keyed, right_stream));
        g.nodes.push(Node {
            op: "join",
            name: None,
            parallelism: 1,
            parents: read,
            view_of: None,
            stream_prefix: "",
            outputs: Box::new(Vec::<OutStream<(K, Window, J)>>::new()),
            make: m,
            config: Vec::new(),
        });
        drop(g);
        if let Some(ts) = timestamp {
            let left_ts = Arc::clone(&ts);
            self.watermarks_to(id, Arc::new(move |l: &T| left_ts(&JoinSide::Left(l.clone()))));
            other.watermarks_to(id, Arc::new(move |r: &R| ts(&JoinSide::Right(r.clone()))));
        }
        let results: Streamlet<(K, Window, J)> = Streamlet {
            graph: Rc::clone(&self.graph),
            id,
            _t: PhantomData,
        };
        let late = results.add_late_view::<JoinSide<T, R>>();
        Windowed { results, late }
    }

    /// Makes this node send watermarks (the largest `ts` of its elements) to every task of the event-time windowed
    /// node `child`, on a stream of their own with an all grouping; this node gets a tick to send them when idle.
    fn watermarks_to(&self, child: usize, ts: TimestampFn<T>) {
        let mut g = self.graph.borrow_mut();
        let stream = format!("{}{}{}", g.nodes[self.id].stream_prefix, WATERMARK_PREFIX, child + 1);
        if let Some(outs) = g.nodes[self.id].outputs.downcast_mut::<Vec<OutStream<T>>>() {
            outs.push(OutStream {
                stream: stream.clone(),
                key: None,
                value: false,
                watermark: Some(ts),
            });
        }
        g.nodes[child].parents.push((self.id, Edge::Watermark, stream));
        let owner = g.nodes[self.id].view_of.unwrap_or(self.id);
        let tick = (
            keys::TICK_TUPLE_FREQ_MS.to_string(),
            crate::windowed::TICK_MS.to_string(),
        );
        if !g.nodes[owner].config.contains(&tick) {
            g.nodes[owner].config.push(tick);
        }
    }

    /// Gives this (windowed) node a tick and a second output, its late elements of type `L`, as a view streamlet.
    fn add_late_view<L: Element>(&self) -> Streamlet<L> {
        let mut g = self.graph.borrow_mut();
        let tick = (
            keys::TICK_TUPLE_FREQ_MS.to_string(),
            crate::windowed::TICK_MS.to_string(),
        );
        if !g.nodes[self.id].config.contains(&tick) {
            g.nodes[self.id].config.push(tick);
        }
        g.nodes.push(Node {
            op: "late",
            name: None,
            parallelism: 1,
            parents: Vec::new(),
            view_of: Some(self.id),
            stream_prefix: "late-",
            outputs: Box::new(Vec::<OutStream<L>>::new()),
            make: Box::new(|_, _, _| {}),
            config: Vec::new(),
        });
        Streamlet {
            graph: Rc::clone(&self.graph),
            id: g.nodes.len() - 1,
            _t: PhantomData,
        }
    }

    /// Calls `f` on every element (a terminal operator).
    pub fn consume(&self, f: impl Fn(T) + Send + Sync + Clone + 'static) -> Streamlet<()> {
        self.per_element("consume", Edge::Shuffle, move || {
            let f = f.clone();
            Box::new(move |x, _out: &mut Vec<()>| f(x))
        })
    }

    /// Writes every element to a [`ops::Sink`] made once per task (a terminal operator).
    pub fn to_sink<S: ops::Sink<T>>(&self, make: impl Fn() -> S + Send + Sync + 'static) -> Streamlet<()> {
        let make = Arc::new(make);
        let m: Make = Box::new(move |b, spec, _outputs| {
            let make = Arc::clone(&make);
            add_bolt(b, spec, move || StreamletBolt::new(Box::new(ops::ToSink::new(make()))));
        });
        self.child("sink", Edge::Shuffle, None, m)
    }

    /// Logs every element (its `Debug` form) to the task's log (stderr).
    pub fn log(&self) -> Streamlet<()>
    where
        T: std::fmt::Debug,
    {
        self.per_element("log", Edge::Shuffle, || {
            Box::new(|x: T, _out: &mut Vec<()>| eprintln!("{x:?}"))
        })
    }
}

/// The `Make` of a windowed operator over elements `T`: `agg` is given the name of its first input's component (a
/// join's left side).
fn window_make<T: Element, K: Element, V: Send + 'static, A, O: Element>(
    spec: WindowSpec<T>,
    agg: impl Fn(Option<String>) -> Aggregate<T, V, A, O> + 'static,
) -> Make
where
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    Box::new(move |b, spec_of, outputs| {
        let results = outputs_of::<(K, Window, O)>(outputs, 0);
        let late = outputs_of::<T>(outputs, 1);
        let agg = agg(spec_of.inputs.first().map(|i| i.0.clone()));
        let spec = spec.clone();
        add_bolt(b, spec_of, move || {
            let op = WindowOp::new(
                spec.clone(),
                agg.clone(),
                Outputs::new(results.clone()),
                Outputs::new(late.clone()),
            );
            match op {
                Ok(op) => StreamletBolt::new(Box::new(op)),
                // A spec the window engine refuses fails the task at prepare, with the engine's reason.
                Err(e) => StreamletBolt::failed(e.to_string()),
            }
        });
    })
}

/// The key function of a keyed child, encoding the key (postcard) for the fields grouping.
fn encoded_key<T, K: Serialize>(key: impl Fn(&T) -> K + Send + Sync + 'static) -> crate::component::KeyFn<T> {
    Arc::new(move |x: &T, buf: &mut Vec<u8>| {
        buf.clear();
        // Writing into a Vec cannot fail for the serde types postcard supports; an unsupported one gives an empty
        // key, which sends every element to one task rather than dropping it.
        if crate::component::encode_into(&key(x), buf).is_err() {
            buf.clear();
        }
    })
}

/// `repartition_with`'s grouping: decodes the element and asks the user's function.
/// `repartition_with`'s function: the partitions (task indexes) an element goes to, given how many there are.
type PartitionFn<T> = Box<dyn Fn(&T, u32) -> Vec<u32> + Send + Sync>;

struct Partitioner<T> {
    f: PartitionFn<T>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> CustomGrouping for Partitioner<T> {
    fn name(&self) -> &str {
        "egret.streamlet.repartition"
    }

    fn choose(&self, tuple: &Tuple<'_>, targets: &[TaskId], out: &mut Vec<TaskId>) {
        let Ok(element) = tuple
            .get_bytes(1)
            .map_err(|e| e.to_string())
            .and_then(|b| decode::<T>(b).map_err(|e| e.to_string()))
        else {
            return;
        };
        for i in (self.f)(&element, targets.len() as u32) {
            if let Some(&t) = targets.get(i as usize) {
                out.push(t);
            }
        }
    }
}
