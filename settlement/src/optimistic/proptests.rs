//! Property tests: random sequences of valid and invalid messages, from a few deterministic
//! keys, with random oracle answers (right, wrong, lagging or none), and the invariants the
//! ledger must keep after every block.

use std::collections::BTreeSet;

use lamina_primitives::bridge::{self, FinalizeWithdrawal, Withdrawal};
use lamina_primitives::interfaces::settlement::{Attestation, SettlementMessage};
use lamina_primitives::{codec, Hash, Keypair};
use proptest::prelude::*;

use super::testkit::{self, World, CHAIN};
use super::{BatchStatus, LedgerEvent, OptimisticLedger, OptimisticParams};

/// One message to build against the ledger's state before the block.
#[derive(Debug, Clone)]
enum Op {
    Claim {
        signer: usize,
        batch_shift: i8,
        attempt_shift: i8,
        range_shift: u8,
        bad_root: bool,
        bond_shift: u8,
        wrong_chain: bool,
    },
    Challenge {
        signer: usize,
        pick: u8,
        attempt_shift: i8,
        other_root: bool,
        wrong_chain: bool,
    },
    Deposit {
        signer: usize,
        to: usize,
        amount: u64,
        nonce_shift: u8,
        wrong_chain: bool,
    },
    Finalize {
        pick: u8,
        id: u8,
        tamper: u8,
    },
    Attest,
}

/// What this block's oracle answers (every node of the test shares it).
#[derive(Debug, Clone, Copy)]
enum OracleMode {
    /// The true output of every batch.
    Honest,
    /// Nothing executed.
    Blind,
    /// Executed up to `lag` heights below the block.
    Lagging(u64),
    /// The wrong output of every batch.
    Liar,
}

fn keys() -> [Keypair; 4] {
    [
        testkit::proposer(),
        testkit::alice(),
        testkit::bob(),
        testkit::carol(),
    ]
}

fn mostly_zero_i8() -> impl Strategy<Value = i8> {
    prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)]
}

fn mostly_zero_u8() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(0u8), 1 => 1u8..3]
}

fn op() -> impl Strategy<Value = Op> {
    let claim = (
        prop_oneof![3 => Just(0usize), 1 => 0usize..4],
        mostly_zero_i8(),
        mostly_zero_i8(),
        mostly_zero_u8(),
        any::<bool>(),
        mostly_zero_u8(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                signer,
                batch_shift,
                attempt_shift,
                range_shift,
                bad_root,
                bond_shift,
                wrong_chain,
            )| Op::Claim {
                signer,
                batch_shift,
                attempt_shift,
                range_shift,
                bad_root,
                bond_shift,
                wrong_chain,
            },
        );
    let challenge = (
        0usize..4,
        any::<u8>(),
        mostly_zero_i8(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(signer, pick, attempt_shift, other_root, wrong_chain)| Op::Challenge {
                signer,
                pick,
                attempt_shift,
                other_root,
                wrong_chain,
            },
        );
    let deposit = (
        0usize..4,
        0usize..4,
        0u64..400,
        mostly_zero_u8(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(signer, to, amount, nonce_shift, wrong_chain)| Op::Deposit {
                signer,
                to,
                amount,
                nonce_shift,
                wrong_chain,
            },
        );
    let finalize = (
        any::<u8>(),
        0u8..5,
        prop_oneof![4 => Just(0u8), 1 => 1u8..5],
    )
        .prop_map(|(pick, id, tamper)| Op::Finalize { pick, id, tamper });
    prop_oneof![
        3 => claim,
        3 => challenge,
        2 => deposit,
        2 => finalize,
        1 => Just(Op::Attest),
    ]
}

fn oracle_mode() -> impl Strategy<Value = OracleMode> {
    prop_oneof![
        6 => Just(OracleMode::Honest),
        2 => Just(OracleMode::Blind),
        2 => (0u64..6).prop_map(OracleMode::Lagging),
        1 => Just(OracleMode::Liar),
    ]
}

fn params_strategy() -> impl Strategy<Value = OptimisticParams> {
    (1u64..5, 1u64..4, 0u64..150, 0u8..=100).prop_map(
        |(challenge_window, batch_size, bond, challenger_reward_percent)| OptimisticParams {
            challenge_window,
            batch_size,
            bond,
            proposers: vec![testkit::proposer().address()],
            claim_timeout: 3,
            challenger_reward_percent,
        },
    )
}

fn chain(wrong: bool) -> &'static str {
    if wrong {
        "another-chain"
    } else {
        CHAIN
    }
}

fn shifted(value: u64, shift: i8) -> u64 {
    value.saturating_add_signed(i64::from(shift))
}

fn finalize_message(
    world: &World,
    ledger: &OptimisticLedger,
    pick: u8,
    id: u8,
    tamper: u8,
) -> FinalizeWithdrawal {
    let batch = u64::from(pick) % (ledger.batches().len() as u64 + 1);
    let id = u64::from(id);
    // The preimage matching what was claimed, so that a batch a lying oracle let finalize
    // proves withdrawals too.
    let claimed_bad = ledger
        .batch(batch)
        .is_some_and(|b| b.output_root == world.bad(batch));
    let (matching, other) = if claimed_bad {
        (world.bad_preimage(batch), world.preimage(batch))
    } else {
        (world.preimage(batch), world.bad_preimage(batch))
    };
    let visible = world.visible(batch);
    let withdrawal = world
        .withdrawals
        .get(id as usize)
        .copied()
        .unwrap_or(Withdrawal {
            id,
            from: testkit::alice().address(),
            to: testkit::alice().address(),
            amount: 1,
        });
    // A proof from the tree of every withdrawal when the batch's tree lacks this one.
    let proof = bridge::withdrawal_proof(visible, id)
        .or_else(|| bridge::withdrawal_proof(&world.withdrawals, id))
        .or_else(|| bridge::withdrawal_proof(&world.withdrawals, 0))
        .unwrap();
    let mut message = FinalizeWithdrawal {
        batch,
        withdrawal,
        preimage: matching,
        proof,
    };
    match tamper {
        1 => message.withdrawal.amount += 1,
        2 => message.preimage = other,
        3 => message.withdrawal.id = (id + 1) % 4,
        4 => message.proof.siblings.push(Hash::digest(b"junk")),
        _ => {}
    }
    message
}

/// Builds `op`'s message against the ledger's state before the block; `claims_before` is
/// how many claims the block carries before this one.
fn build(
    op: &Op,
    claims_before: u64,
    world: &World,
    ledger: &OptimisticLedger,
    keys: &[Keypair; 4],
) -> SettlementMessage {
    match *op {
        Op::Claim {
            signer,
            batch_shift,
            attempt_shift,
            range_shift,
            bad_root,
            bond_shift,
            wrong_chain,
        } => {
            // Later claims of the same block aim at the batches after the first one's.
            let target = ledger.next_claim();
            let batch = shifted(target.batch + claims_before, batch_shift);
            let base_attempt = ledger
                .batch(batch)
                .filter(|b| matches!(b.status, BatchStatus::Rejected { .. }))
                .map_or(0, |b| b.attempt + 1);
            let attempt =
                u32::try_from(shifted(u64::from(base_attempt), attempt_shift)).unwrap_or(u32::MAX);
            let (first, last) = ledger.params().batch_range(batch);
            let root = if bad_root {
                world.bad(batch)
            } else {
                world.good(batch)
            };
            SettlementMessage::Claim(bridge::Claim::sign(
                chain(wrong_chain),
                &keys[signer],
                bridge::ClaimData {
                    batch,
                    attempt,
                    first_height: first,
                    last_height: last + u64::from(range_shift),
                    output_root: root,
                    bond: ledger.params().bond + u64::from(bond_shift),
                },
            ))
        }
        Op::Challenge {
            signer,
            pick,
            attempt_shift,
            other_root,
            wrong_chain,
        } => {
            // Mostly an open batch, sometimes any index up to the next unclaimed one.
            let open_from = ledger.finalized_batches();
            let open = ledger.next_claim().batch - open_from;
            let batch = if open > 0 && pick % 8 != 0 {
                open_from + u64::from(pick) % open
            } else {
                u64::from(pick) % (ledger.next_claim().batch + 1)
            };
            let (attempt, root) = ledger
                .batch(batch)
                .map_or((0, world.good(batch)), |b| (b.attempt, b.output_root));
            let root = match (other_root, root == world.good(batch)) {
                (false, _) => root,
                (true, true) => world.bad(batch),
                (true, false) => world.good(batch),
            };
            let attempt =
                u32::try_from(shifted(u64::from(attempt), attempt_shift)).unwrap_or(u32::MAX);
            SettlementMessage::Challenge(bridge::Challenge::sign(
                chain(wrong_chain),
                &keys[signer],
                bridge::ChallengeData {
                    batch,
                    attempt,
                    output_root: root,
                },
            ))
        }
        Op::Deposit {
            signer,
            to,
            amount,
            nonce_shift,
            wrong_chain,
        } => {
            let nonce = ledger.deposit_nonce(&keys[signer].address()) + u64::from(nonce_shift);
            SettlementMessage::Deposit(bridge::Deposit::sign(
                chain(wrong_chain),
                &keys[signer],
                bridge::DepositData {
                    to: keys[to].address(),
                    amount,
                    nonce,
                },
            ))
        }
        Op::Finalize { pick, id, tamper } => {
            SettlementMessage::FinalizeWithdrawal(finalize_message(world, ledger, pick, id, tamper))
        }
        Op::Attest => SettlementMessage::Attestation(Attestation::sign(
            CHAIN,
            &keys[1],
            1,
            Hash::digest(b"root"),
        )),
    }
}

/// What the test tracks from the events.
#[derive(Debug, Default)]
struct History {
    deposited: u128,
    withdrawn: u128,
    withdrawal_ids: BTreeSet<u64>,
}

/// Finalized or rejected: no rule changes the claim any more.
fn is_final(status: &BatchStatus) -> bool {
    !status.is_open()
}

fn check_block(
    before: &OptimisticLedger,
    after: &OptimisticLedger,
    events: &[LedgerEvent],
    history: &mut History,
) -> Result<(), TestCaseError> {
    let params = after.params();
    for event in events {
        match *event {
            LedgerEvent::DepositQueued { amount, .. } => history.deposited += u128::from(amount),
            LedgerEvent::WithdrawalFinalized { id, amount, .. } => {
                history.withdrawn += u128::from(amount);
                prop_assert!(
                    history.withdrawal_ids.insert(id),
                    "withdrawal {id} paid twice"
                );
            }
            LedgerEvent::Slashed {
                amount,
                reward,
                burned,
                ..
            } => {
                prop_assert_eq!(reward + burned, amount);
                prop_assert_eq!(
                    u128::from(reward),
                    u128::from(amount) * u128::from(params.challenger_reward_percent) / 100
                );
            }
            _ => {}
        }
    }

    // Conservation: sum(balances) + locked bonds + burned + (deposited - withdrawn) equals
    // the genesis supply, with bonds counted from the batches themselves and the bridge
    // flows from the events. A balance that underflowed (saturated) would break it.
    let balances: u128 = after.balances().values().map(|b| u128::from(*b)).sum();
    let locked: u128 = after
        .batches()
        .values()
        .map(|b| match b.status {
            BatchStatus::Pending => u128::from(b.bond),
            BatchStatus::Challenged { bond, .. } => u128::from(b.bond) + u128::from(bond),
            _ => 0,
        })
        .sum();
    prop_assert!(history.deposited >= history.withdrawn);
    prop_assert_eq!(
        balances + locked + u128::from(after.burned()) + history.deposited - history.withdrawn,
        u128::from(after.genesis_supply())
    );
    prop_assert_eq!(u128::from(after.locked()), locked);
    prop_assert_eq!(
        u128::from(after.escrowed()),
        history.deposited - history.withdrawn
    );
    prop_assert_eq!(
        u128::from(after.total_supply_settlement_side()),
        balances + locked
    );
    prop_assert!(after.balances().values().all(|b| *b > 0));

    // Statuses only move forward: an open claim stays open or becomes final, a final one
    // never changes, and an index only gets a new claim (a higher attempt) after its last
    // one was rejected (possibly earlier in the same block).
    for (index, old) in before.batches() {
        let new = after.batch(*index);
        prop_assert!(new.is_some(), "batch {index} vanished");
        let Some(new) = new else { continue };
        if new.attempt == old.attempt {
            if is_final(&old.status) {
                prop_assert_eq!(new, old);
            }
        } else {
            prop_assert!(new.attempt > old.attempt);
            // Rejected before this block, or by a challenge earlier in this block.
            let was_rejected = matches!(old.status, BatchStatus::Rejected { .. })
                || events.iter().any(|event| {
                    matches!(event, LedgerEvent::BatchRejected { batch, attempt, .. }
                        if batch == index && *attempt == old.attempt)
                });
            prop_assert!(was_rejected, "batch {index} re-claimed while not rejected");
        }
        if let BatchStatus::Finalized { .. } = old.status {
            prop_assert_eq!(new, old);
        }
    }

    // Shape: indices 0..n, finalized ones first, then open ones, then rejected ones.
    let statuses: Vec<&BatchStatus> = after.batches().values().map(|b| &b.status).collect();
    prop_assert!(after
        .batches()
        .keys()
        .copied()
        .eq(0..after.batches().len() as u64));
    let finalized = statuses
        .iter()
        .take_while(|s| matches!(s, BatchStatus::Finalized { .. }))
        .count();
    let open = statuses[finalized..]
        .iter()
        .take_while(|s| s.is_open())
        .count();
    let rest_rejected = statuses[finalized + open..]
        .iter()
        .all(|s| matches!(s, BatchStatus::Rejected { .. }));
    prop_assert!(rest_rejected, "statuses out of shape: {statuses:?}");
    prop_assert_eq!(after.finalized_batches(), finalized as u64);
    prop_assert_eq!(after.next_claim().batch, (finalized + open) as u64);
    prop_assert_eq!(after.settled_height(), finalized as u64 * params.batch_size);
    for batch in after.batches().values() {
        prop_assert_eq!(batch.bond, params.bond);
        prop_assert!(batch.status.is_open() || batch.failed_challengers.is_empty());
        prop_assert_eq!(
            (batch.first_height, batch.last_height),
            params.batch_range(batch.index)
        );
        prop_assert!(batch.last_height < batch.included_at);
        prop_assert_eq!(batch.deadline, batch.included_at + params.challenge_window);
        if let BatchStatus::Finalized { at } = batch.status {
            prop_assert!(at >= batch.deadline);
        }
    }

    // Finalization in index order, continuing from where it stood.
    let newly: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::BatchFinalized { batch, .. } => Some(*batch),
            _ => None,
        })
        .collect();
    prop_assert!(newly
        .iter()
        .copied()
        .eq(before.finalized_batches()..after.finalized_batches()));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_blocks_keep_the_invariants(
        params in params_strategy(),
        blocks in prop::collection::vec(
            (prop::collection::vec(op(), 0..6), oracle_mode()),
            1..40,
        ),
    ) {
        let keys = keys();
        let world = World::new(params.batch_size);
        let genesis = [
            (keys[0].address(), 1000),
            (keys[1].address(), 500),
            (keys[2].address(), 300),
        ];
        let mut ledger = OptimisticLedger::new(params.clone(), genesis).unwrap();
        let mut twin = OptimisticLedger::new(params, genesis).unwrap();
        let mut history = History::default();
        for (ops, mode) in &blocks {
            let height = ledger.applied_height() + 1;
            let oracle = |_first: u64, last: u64| {
                let batch = world.batch_of(last);
                match *mode {
                    OracleMode::Honest => Some(world.good(batch)),
                    OracleMode::Blind => None,
                    OracleMode::Lagging(lag) => {
                        (last + lag < height).then(|| world.good(batch))
                    }
                    OracleMode::Liar => Some(world.bad(batch)),
                }
            };
            let mut claims_before = 0;
            let mut messages = Vec::new();
            for op in ops {
                messages.push(build(op, claims_before, &world, &ledger, &keys));
                if matches!(op, Op::Claim { .. }) {
                    claims_before += 1;
                }
            }
            let before = ledger.clone();
            let events = ledger.apply_block(height, &messages, CHAIN, &oracle).unwrap();
            check_block(&before, &ledger, &events, &mut history)?;

            // Determinism: the same inputs give the same ledger and the same events.
            let twin_events = twin.apply_block(height, &messages, CHAIN, &oracle).unwrap();
            prop_assert_eq!(&twin_events, &events);
            prop_assert_eq!(&twin, &ledger);

            // A skipped message changes nothing: the block without them gives the same
            // ledger and the same other events.
            let skipped: BTreeSet<u64> = events
                .iter()
                .filter_map(|e| match e {
                    LedgerEvent::Skipped { index_in_block, .. } => Some(*index_in_block),
                    _ => None,
                })
                .collect();
            let kept: Vec<SettlementMessage> = messages
                .iter()
                .enumerate()
                .filter(|(i, _)| !skipped.contains(&(*i as u64)))
                .map(|(_, m)| m.clone())
                .collect();
            let mut without = before.clone();
            let without_events = without.apply_block(height, &kept, CHAIN, &oracle).unwrap();
            prop_assert_eq!(&without, &ledger);
            let accepted: Vec<&LedgerEvent> = events
                .iter()
                .filter(|e| !matches!(e, LedgerEvent::Skipped { .. }))
                .collect();
            prop_assert_eq!(without_events.iter().collect::<Vec<_>>(), accepted);
        }
        let restored: OptimisticLedger = codec::decode_trusted(&codec::encode(&ledger)).unwrap();
        prop_assert_eq!(restored, ledger);
    }
}
