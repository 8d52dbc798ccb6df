//! heronpy's `StatefulComponent` under effectively-once: Egret's checkpoints carry the component's heronpy `State`
//! (a `HashMapState` the component keeps and fills), pickled. As Heron's Python instance does, `init_state(state)`
//! is called before `initialize` (with the state of the checkpoint restored, or an empty one on a clean start), and
//! `pre_save()` just before the state is saved at each checkpoint. The pickling is `instance.py`'s
//! (`init_component_state`, `save_component_state`); this module keeps what the runtime hands over between the calls.

use pyo3::prelude::*;

use crate::INSTANCE_MODULE;

/// One component's state: what the runtime restored (before the component exists) and the `State` object it was
/// given.
#[derive(Default)]
pub struct ComponentState {
    /// Set by Egret's `init_state` (effectively-once only): the bytes of the checkpoint restored, `None` on a clean
    /// start. Taken when the component is made.
    restored: Option<Option<Vec<u8>>>,
    /// The `State` object given to the component's `init_state`.
    state: Option<Py<PyAny>>,
}

impl ComponentState {
    /// Egret's `Stateful::init_state`: kept until the component is made.
    pub fn restore(&mut self, restored: Option<&[u8]>) {
        self.restored = Some(restored.map(<[u8]>::to_vec));
        self.state = None;
    }

    /// Gives a freshly made `component` its state (`component.init_state(state)`), when the runtime restored one:
    /// call it before `initialize`.
    pub fn init(&mut self, py: Python<'_>, component: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(restored) = self.restored.take() else {
            return Ok(());
        };
        let instance = py.import(INSTANCE_MODULE)?;
        let bytes = restored.map(|b| pyo3::types::PyBytes::new(py, &b));
        let state = instance.call_method1("init_component_state", (component, bytes))?;
        self.state = Some(state.unbind());
        Ok(())
    }

    /// Egret's `Stateful::pre_save` of a component (`None` until it is made): its pickled state into `out`.
    pub fn pre_save(
        &self,
        component: Option<&Py<PyAny>>,
        name: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), egret_api::UserError> {
        let Some(component) = component else {
            return Err(format!("{name}: checkpoint before the component was made").into());
        };
        Python::attach(|py| match self.save(py, component.bind(py)) {
            Ok(bytes) => {
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Err(e) => Err(Box::new(crate::errors::PythonError::new(py, e, name, "pre_save")) as egret_api::UserError),
        })
    }

    /// `component.pre_save()`, then the pickled state.
    fn save(&self, py: Python<'_>, component: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let instance = py.import(INSTANCE_MODULE)?;
        let state = self.state.as_ref().map(|s| s.bind(py).clone());
        let bytes = instance.call_method1("save_component_state", (component, state))?;
        bytes.extract::<Vec<u8>>()
    }
}
