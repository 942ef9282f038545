//! Memory planning: every temporary tensor of a step program gets a slot in a shared
//! buffer, reused once the tensor is dead, so the planned memory stays close to the largest
//! set of tensors alive at once (the live bound, which no plan can beat).

use super::autodiff::{Instr, StepProgram, Storage, VId};
use super::Graph;

/// Slot assignment for the planned tensors of one program.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The slot of each virtual tensor (`None` for host and parameter tensors).
    pub slot: Vec<Option<usize>>,
    /// Size of each slot in bytes.
    pub slot_bytes: Vec<u64>,
    /// Sum of the slots' sizes: what the plan allocates.
    pub planned_peak_bytes: u64,
    /// The most bytes of planned tensors alive at any one instruction.
    pub live_bound_bytes: u64,
}

/// For each planned tensor, the first instruction that writes it and the last that reads it.
pub fn lifetimes(graph: &Graph, program: &StepProgram) -> Vec<Option<(usize, usize)>> {
    let mut life: Vec<Option<(usize, usize)>> = vec![None; program.tensors.len()];
    for (i, instr) in program.instrs.iter().enumerate() {
        for v in program.writes(instr) {
            let entry = life[v.0].get_or_insert((i, i));
            entry.0 = entry.0.min(i);
            entry.1 = entry.1.max(i);
        }
        for v in program.reads(graph, instr) {
            if let Some(entry) = life[v.0].as_mut() {
                entry.1 = entry.1.max(i);
            }
        }
    }
    let end = program.instrs.len().saturating_sub(1);
    for v in &program.outputs {
        if let Some(entry) = life[v.0].as_mut() {
            entry.1 = end;
        }
    }
    for (v, t) in program.tensors.iter().enumerate() {
        if t.storage != Storage::Planned {
            life[v] = None;
        }
    }
    life
}

/// Assigns slots greedily in instruction order: a new tensor takes the smallest free slot
/// that fits, else grows the largest free slot, else opens a new one. Outputs are assigned
/// before the instruction's dead inputs are freed, so no instruction reads and writes the
/// same slot.
pub fn plan(graph: &Graph, program: &StepProgram) -> Plan {
    let life = lifetimes(graph, program);
    let bytes: Vec<u64> = program.tensors.iter().map(|t| t.bytes().max(4)).collect();
    let mut slot: Vec<Option<usize>> = vec![None; program.tensors.len()];
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live_bytes = 0u64;
    let mut live_bound = 0u64;

    let mut born: Vec<Vec<VId>> = vec![Vec::new(); program.instrs.len()];
    let mut dies: Vec<Vec<VId>> = vec![Vec::new(); program.instrs.len()];
    for (v, l) in life.iter().enumerate() {
        if let Some((first, last)) = *l {
            born[first].push(VId(v));
            dies[last].push(VId(v));
        }
    }

    for i in 0..program.instrs.len() {
        for &v in &born[i] {
            let need = bytes[v.0];
            let fitting = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_bytes[s] >= need)
                .min_by_key(|(_, &s)| slot_bytes[s]);
            let chosen = match fitting {
                Some((k, _)) => free.swap_remove(k),
                None => match free.iter().enumerate().max_by_key(|(_, &s)| slot_bytes[s]) {
                    Some((k, _)) => {
                        let s = free.swap_remove(k);
                        slot_bytes[s] = need;
                        s
                    }
                    None => {
                        slot_bytes.push(need);
                        slot_bytes.len() - 1
                    }
                },
            };
            slot[v.0] = Some(chosen);
            live_bytes += need;
        }
        live_bound = live_bound.max(live_bytes);
        for &v in &dies[i] {
            free.push(slot[v.0].expect("assigned when born"));
            live_bytes -= bytes[v.0];
        }
    }
    debug_assert!(program
        .instrs
        .iter()
        .all(|ins| !matches!(ins, Instr::Update { .. }) || program.writes(ins).is_empty()));
    Plan {
        planned_peak_bytes: slot_bytes.iter().sum(),
        live_bound_bytes: live_bound,
        slot,
        slot_bytes,
    }
}
