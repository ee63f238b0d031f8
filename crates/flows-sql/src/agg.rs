//! Aggregate functions: their running states, how two partial states (from two threads) merge,
//! and the final value.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use crate::exec::Fx;

use crate::error::EvalError;
use crate::expr::BExpr;
use crate::value::{Type, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// Exact here (a set of the values); Athena's is an estimate within 2.3%.
    ApproxDistinct,
    CountIf,
    Arbitrary,
    MaxBy,
    MinBy,
}

impl AggFunc {
    pub fn by_name(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "avg" => AggFunc::Avg,
            "approx_distinct" => AggFunc::ApproxDistinct,
            "count_if" => AggFunc::CountIf,
            "arbitrary" | "any_value" => AggFunc::Arbitrary,
            "max_by" => AggFunc::MaxBy,
            "min_by" => AggFunc::MinBy,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AggSpec {
    pub func: AggFunc,
    pub args: Vec<BExpr>,
    pub distinct: bool,
    /// Of the result.
    pub ty: Type,
    /// Of the first argument (`Unknown` for `count(*)`).
    pub arg_ty: Type,
}

#[derive(Debug, Clone)]
pub enum AggState {
    Count(i64),
    /// A 128-bit sum as (high, low) words, so that no sum of 64-bit values overflows and the
    /// state stays 8-byte aligned; `None` until a value is seen.
    SumInt(Option<(i64, u64)>),
    SumFloat(Option<f64>),
    Avg(f64, i64),
    Best(Value),
    /// max_by / min_by: the value and the key it was chosen by.
    By(Box<(Value, Value)>),
    Distinct(Box<HashSet<Value, BuildHasherDefault<Fx>>>),
}

impl AggSpec {
    pub fn init(&self) -> AggState {
        if self.distinct || self.func == AggFunc::ApproxDistinct {
            return AggState::Distinct(Box::default());
        }
        match self.func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::CountIf => AggState::Count(0),
            AggFunc::Sum if self.ty == Type::Float => AggState::SumFloat(None),
            AggFunc::Sum => AggState::SumInt(None),
            AggFunc::Avg => AggState::Avg(0.0, 0),
            AggFunc::MaxBy | AggFunc::MinBy => AggState::By(Box::new((Value::Null, Value::Null))),
            _ => AggState::Best(Value::Null),
        }
    }

    pub fn update(&self, state: &mut AggState, row: &[Value]) -> Result<(), EvalError> {
        if self.func == AggFunc::CountStar {
            if let AggState::Count(n) = state {
                *n += 1;
            }
            return Ok(());
        }
        let Some(first) = self.args.first() else {
            return Ok(());
        };
        let v = first.eval_ref(row)?;
        if v.is_null() {
            return Ok(());
        }
        match state {
            AggState::Distinct(set) => {
                if !set.contains(&*v) {
                    set.insert(v.into_owned());
                }
                Ok(())
            }
            AggState::Count(n) if self.func != AggFunc::CountIf => {
                *n += 1;
                Ok(())
            }
            _ => self.fold(state, v.into_owned(), row),
        }
    }

    fn fold(&self, state: &mut AggState, v: Value, row: &[Value]) -> Result<(), EvalError> {
        match state {
            AggState::Count(n) => {
                if self.func != AggFunc::CountIf || matches!(v, Value::Bool(true)) {
                    *n += 1;
                }
            }
            AggState::SumInt(s) => {
                if let Value::Int(x) = v {
                    *s = Some(split(joined(*s) + i128::from(x)));
                }
            }
            AggState::SumFloat(s) => {
                let x = match v {
                    Value::Int(x) => x as f64,
                    Value::Float(x) => x,
                    _ => return Ok(()),
                };
                *s = Some(s.unwrap_or(0.0) + x);
            }
            AggState::Avg(sum, n) => {
                let x = match v {
                    Value::Int(x) => x as f64,
                    Value::Float(x) => x,
                    _ => return Ok(()),
                };
                *sum += x;
                *n += 1;
            }
            AggState::Best(best) => {
                let better = match self.func {
                    AggFunc::Min => best.is_null() || v.cmp_sql(best).is_lt(),
                    AggFunc::Max => best.is_null() || v.cmp_sql(best).is_gt(),
                    _ => best.is_null(),
                };
                if better {
                    *best = v;
                }
            }
            AggState::By(by) => {
                let (value, key) = &mut **by;
                let k = match self.args.get(1) {
                    Some(e) => e.eval(row)?,
                    None => Value::Null,
                };
                if k.is_null() {
                    return Ok(());
                }
                let better = key.is_null()
                    || match self.func {
                        AggFunc::MaxBy => k.cmp_sql(key).is_gt(),
                        _ => k.cmp_sql(key).is_lt(),
                    };
                if better {
                    *value = v;
                    *key = k;
                }
            }
            AggState::Distinct(set) => {
                set.insert(v);
            }
        }
        Ok(())
    }

    /// Folds `other` (a partial state of the same aggregate) into `state`.
    pub fn merge(&self, state: &mut AggState, other: AggState) {
        match (state, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::SumInt(a), AggState::SumInt(Some(b))) => {
                *a = Some(split(joined(*a) + joined(Some(b))));
            }
            (AggState::SumFloat(a), AggState::SumFloat(Some(b))) => {
                *a = Some(a.unwrap_or(0.0) + b);
            }
            (AggState::Avg(s, n), AggState::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (AggState::Best(best), AggState::Best(v)) => {
                if v.is_null() {
                    return;
                }
                let better = match self.func {
                    AggFunc::Min => best.is_null() || v.cmp_sql(best).is_lt(),
                    AggFunc::Max => best.is_null() || v.cmp_sql(best).is_gt(),
                    _ => best.is_null(),
                };
                if better {
                    *best = v;
                }
            }
            (AggState::By(by), AggState::By(other)) => {
                let (value, key) = &mut **by;
                let (v, k) = *other;
                if k.is_null() {
                    return;
                }
                let better = key.is_null()
                    || match self.func {
                        AggFunc::MaxBy => k.cmp_sql(key).is_gt(),
                        _ => k.cmp_sql(key).is_lt(),
                    };
                if better {
                    *value = v;
                    *key = k;
                }
            }
            (AggState::Distinct(a), AggState::Distinct(b)) => {
                if a.len() < b.len() {
                    let small = std::mem::replace(a, b);
                    a.extend(*small);
                } else {
                    a.extend(*b);
                }
            }
            _ => {}
        }
    }

    pub fn finish(&self, state: AggState) -> Result<Value, EvalError> {
        Ok(match state {
            AggState::Count(n) => Value::Int(n),
            AggState::SumInt(None) | AggState::SumFloat(None) => Value::Null,
            AggState::SumInt(Some(s)) => Value::Int(
                i64::try_from(joined(Some(s)))
                    .map_err(|_| EvalError("sum: bigint overflow".into()))?,
            ),
            AggState::SumFloat(Some(s)) => Value::Float(s),
            AggState::Avg(_, 0) => Value::Null,
            AggState::Avg(s, n) => Value::Float(s / n as f64),
            AggState::Best(v) => v,
            AggState::By(by) => by.0,
            AggState::Distinct(set) => {
                if matches!(self.func, AggFunc::Count | AggFunc::ApproxDistinct) {
                    return Ok(Value::Int(set.len() as i64));
                }
                // sum(DISTINCT x), avg(DISTINCT x)...: fold the distinct values.
                let plain = AggSpec {
                    distinct: false,
                    ..self.clone()
                };
                let mut st = plain.init();
                for v in *set {
                    plain.fold(&mut st, v, &[])?;
                }
                plain.finish(st)?
            }
        })
    }
}

fn joined(s: Option<(i64, u64)>) -> i128 {
    s.map_or(0, |(hi, lo)| (i128::from(hi) << 64) | i128::from(lo))
}

fn split(v: i128) -> (i64, u64) {
    ((v >> 64) as i64, v as u64)
}
