//! Unit tests of each rule of the optimistic ledger.

use lamina_primitives::bridge::Withdrawal;
use lamina_primitives::codec;
use lamina_primitives::interfaces::settlement::{Attestation, SettlementError, SettlementMessage};
use lamina_primitives::{Address, Hash};

use super::testkit::*;
use super::{
    BatchStatus, LedgerEvent, OptimisticError, OptimisticLedger, OptimisticParams, ParamsError,
    QueuedDeposit, RejectReason, SkipReason,
};

fn addr(key: &lamina_primitives::Keypair) -> Address {
    key.address()
}

fn status(ledger: &OptimisticLedger, batch: u64) -> BatchStatus {
    ledger.batch(batch).unwrap().status
}

/// Conservation, checked in every scenario.
fn assert_conserved(ledger: &OptimisticLedger) {
    let balances: u64 = ledger.balances().values().sum();
    assert_eq!(
        balances + ledger.locked() + ledger.burned() + ledger.escrowed(),
        ledger.genesis_supply()
    );
    assert_eq!(
        ledger.total_supply_settlement_side(),
        balances + ledger.locked()
    );
}

#[test]
fn new_validates_params_and_supply() {
    let bad = OptimisticParams {
        batch_size: 0,
        ..params()
    };
    assert_eq!(
        OptimisticLedger::new(bad, []),
        Err(OptimisticError::InvalidParams(ParamsError::ZeroBatchSize))
    );
    let a = addr(&alice());
    assert_eq!(
        OptimisticLedger::new(params(), [(a, u64::MAX), (a, 1)]),
        Err(OptimisticError::SupplyOverflow)
    );
    let ledger = OptimisticLedger::new(params(), [(a, 5), (a, 7), (addr(&bob()), 0)]).unwrap();
    assert_eq!(ledger.balance(&a), 12);
    assert_eq!(ledger.balances().len(), 1);
    assert_eq!(ledger.genesis_supply(), 12);
    assert_eq!(ledger.applied_height(), 0);
    assert_eq!(ledger.settled_height(), 0);
}

#[test]
fn heights_apply_in_order_and_out_of_order_changes_nothing() {
    let world = World::new(2);
    let mut ledger = ledger();
    let before = ledger.clone();
    assert_eq!(
        ledger.apply_block(2, &[], CHAIN, &world.oracle(0)),
        Err(SettlementError::OutOfOrder {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(ledger, before);
    apply(&mut ledger, 1, &[], &world.oracle(0));
    assert_eq!(
        ledger.apply_block(1, &[], CHAIN, &world.oracle(0)),
        Err(SettlementError::OutOfOrder {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(ledger.applied_height(), 1);
}

#[test]
fn attestations_are_skipped() {
    let world = World::new(2);
    let mut ledger = ledger();
    let attestation = SettlementMessage::Attestation(Attestation::sign(
        CHAIN,
        &alice(),
        1,
        Hash::digest(b"root"),
    ));
    let events = apply(&mut ledger, 1, &[attestation], &world.oracle(0));
    assert_eq!(
        events,
        vec![LedgerEvent::Skipped {
            index_in_block: 0,
            reason: SkipReason::WrongMode
        }]
    );
}

#[test]
fn honest_claims_finalize_after_the_window_and_not_before() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let mut ledger = ledger();
    let p = addr(&proposer());
    advance(&mut ledger, 2, &oracle);
    let events = apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &oracle);
    assert_eq!(
        events,
        vec![LedgerEvent::ClaimPosted {
            batch: 0,
            attempt: 0,
            output_root: world.good(0),
            deadline: 7
        }]
    );
    let batch = ledger.batch(0).unwrap();
    assert_eq!(
        (batch.first_height, batch.last_height, batch.included_at),
        (1, 2, 3)
    );
    assert_eq!(ledger.balance(&p), 900);
    assert_eq!(ledger.locked(), 100);
    assert_conserved(&ledger);

    // Batch 1 (heights 3..=4) can be claimed from block 5 on.
    apply(&mut ledger, 4, &[], &oracle);
    apply(&mut ledger, 5, &[claim(1, 0, world.good(1))], &oracle);
    assert!(advance(&mut ledger, 6, &oracle).is_empty());
    assert_eq!(status(&ledger, 0), BatchStatus::Pending);
    assert_eq!(ledger.settled_height(), 0);

    let events = apply(&mut ledger, 7, &[], &oracle);
    assert_eq!(
        events,
        vec![LedgerEvent::BatchFinalized {
            batch: 0,
            last_height: 2,
            output_root: world.good(0)
        }]
    );
    assert_eq!(status(&ledger, 0), BatchStatus::Finalized { at: 7 });
    assert_eq!(ledger.settled_height(), 2);
    assert_eq!(ledger.settled_batch().unwrap().output_root, world.good(0));
    assert_eq!(ledger.balance(&p), 900);

    assert!(advance(&mut ledger, 8, &oracle).is_empty());
    apply(&mut ledger, 9, &[], &oracle);
    assert_eq!(ledger.settled_height(), 4);
    assert_eq!(ledger.finalized_batches(), 2);
    assert_eq!(ledger.balance(&p), 1000);
    assert_eq!(ledger.locked(), 0);
    assert_conserved(&ledger);
}

#[test]
fn invalid_claims_are_skipped_with_their_reason() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let p = params();
    let mut ledger = ledger();
    advance(&mut ledger, 1, &oracle);
    let good = world.good(0);
    let other_chain = SettlementMessage::Claim(lamina_primitives::bridge::Claim::sign(
        "another-chain",
        &proposer(),
        lamina_primitives::bridge::ClaimData {
            batch: 0,
            attempt: 0,
            first_height: 1,
            last_height: 2,
            output_root: good,
            bond: 100,
        },
    ));
    let messages = [
        claim_as(&alice(), 0, 0, (1, 2), good, 100),
        claim_as(&proposer(), 0, 0, (1, 2), good, 99),
        claim(1, 0, world.good(1)),
        claim(0, 1, good),
        claim_as(&proposer(), 0, 0, (1, 3), good, 100),
        claim(0, 0, good),
    ];
    let reference = {
        let mut reference = ledger.clone();
        apply(&mut reference, 2, &[], &oracle);
        reference
    };
    let events = apply(&mut ledger, 2, &messages, &oracle);
    assert_eq!(
        skipped(&events),
        vec![
            (0, SkipReason::NotProposer),
            (1, SkipReason::WrongBond { expected: 100 }),
            (2, SkipReason::OutOfOrder { expected: 0 }),
            (3, SkipReason::WrongAttempt { expected: 0 }),
            (4, SkipReason::WrongRange { first: 1, last: 2 }),
            // Block 2 cannot claim height 2.
            (5, SkipReason::NotYetExecuted),
        ]
    );
    assert_eq!(events.len(), messages.len());
    assert_eq!(ledger, reference);
    let events = apply(&mut ledger, 3, &[other_chain], &oracle);
    assert_eq!(skipped(&events), vec![(0, SkipReason::BadSignature)]);

    let mut poor = OptimisticLedger::new(p.clone(), [(p.proposers[0], 50)]).unwrap();
    advance(&mut poor, 2, &oracle);
    let events = apply(&mut poor, 3, &[claim(0, 0, good)], &oracle);
    assert_eq!(
        skipped(&events),
        vec![(
            0,
            SkipReason::InsufficientBalance {
                balance: 50,
                needed: 100
            }
        )]
    );
    assert!(poor.batch(0).is_none());
}

#[test]
fn a_wrong_claim_is_rejected_slashed_and_later_claims_fall_with_it() {
    let world = World::new(2);
    let (p, a, b) = (addr(&proposer()), addr(&alice()), addr(&bob()));
    let mut ledger = ledger();
    // This node has executed only heights 1..=2: it can decide batch 0, not batch 1.
    let oracle = world.oracle(2);
    advance(&mut ledger, 2, &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.bad(0))], &oracle);
    apply(&mut ledger, 4, &[], &oracle);
    apply(&mut ledger, 5, &[claim(1, 0, world.good(1))], &oracle);
    let events = apply(
        &mut ledger,
        6,
        &[challenge(&bob(), 1, 0, world.good(1))],
        &oracle,
    );
    assert_eq!(
        events,
        vec![LedgerEvent::ChallengeOpen {
            batch: 1,
            challenger: b
        }]
    );
    assert_eq!(ledger.locked(), 300);

    // Block 7 is batch 0's deadline: still open to challenges during the block.
    let bad_claim = claim(0, 0, world.bad(0));
    let events = apply(
        &mut ledger,
        7,
        &[
            claim(2, 0, world.good(2)),
            challenge(&alice(), 0, 0, world.bad(0)),
        ],
        &oracle,
    );
    let wrong = RejectReason::WrongOutput {
        challenger: a,
        correct_root: world.good(0),
    };
    let parent = RejectReason::ParentRejected { parent: 0 };
    assert_eq!(
        events,
        vec![
            LedgerEvent::ClaimPosted {
                batch: 2,
                attempt: 0,
                output_root: world.good(2),
                deadline: 11
            },
            LedgerEvent::ChallengeUpheld {
                batch: 0,
                challenger: a,
                correct_root: world.good(0)
            },
            LedgerEvent::Slashed {
                who: p,
                amount: 100,
                reward_to: a,
                reward: 40,
                burned: 60
            },
            LedgerEvent::BatchRejected {
                batch: 0,
                attempt: 0,
                reason: wrong
            },
            LedgerEvent::BatchRejected {
                batch: 1,
                attempt: 0,
                reason: parent
            },
            LedgerEvent::BatchRejected {
                batch: 2,
                attempt: 0,
                reason: parent
            },
        ]
    );
    assert_eq!(
        status(&ledger, 0),
        BatchStatus::Rejected {
            at: 7,
            reason: wrong
        }
    );
    assert_eq!(
        status(&ledger, 2),
        BatchStatus::Rejected {
            at: 7,
            reason: parent
        }
    );
    // The proposer lost batch 0's bond and got batches 1 and 2 back; alice won 40; bob's
    // open challenge of batch 1 is moot and his bond returned.
    assert_eq!(ledger.balance(&p), 900);
    assert_eq!(ledger.balance(&a), 1040);
    assert_eq!(ledger.balance(&b), 1000);
    assert_eq!((ledger.burned(), ledger.locked()), (60, 0));
    assert_conserved(&ledger);
    let target = ledger.next_claim();
    assert_eq!((target.batch, target.attempt), (0, 1));

    // Old claims cannot be replayed, an old challenge does not touch the new claim, and the
    // batches are claimed again from the rejected index.
    let events = apply(
        &mut ledger,
        8,
        &[
            bad_claim,
            claim(0, 1, world.good(0)),
            claim(1, 0, world.good(1)),
            claim(1, 1, world.good(1)),
            claim(2, 1, world.good(2)),
            challenge(&alice(), 0, 0, world.bad(0)),
        ],
        &oracle,
    );
    assert_eq!(
        skipped(&events),
        vec![
            (0, SkipReason::WrongAttempt { expected: 1 }),
            (2, SkipReason::WrongAttempt { expected: 1 }),
            (5, SkipReason::WrongClaim),
        ]
    );
    assert_eq!(ledger.balance(&p), 600);
    let events = advance(&mut ledger, 12, &world.oracle(u64::MAX));
    let finalized: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::BatchFinalized { batch, .. } => Some(*batch),
            _ => None,
        })
        .collect();
    assert_eq!(finalized, vec![0, 1, 2]);
    assert_eq!(ledger.settled_height(), 6);
    assert_eq!(ledger.batch(0).unwrap().attempt, 1);
    assert_eq!(ledger.balance(&p), 900);
    assert_conserved(&ledger);
}

#[test]
fn a_failed_challenge_slashes_the_challenger() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let (p, a, b) = (addr(&proposer()), addr(&alice()), addr(&bob()));
    let mut ledger = ledger();
    advance(&mut ledger, 2, &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &oracle);
    let alice_challenge = challenge(&alice(), 0, 0, world.good(0));
    let events = apply(
        &mut ledger,
        4,
        std::slice::from_ref(&alice_challenge),
        &oracle,
    );
    assert_eq!(
        events,
        vec![
            LedgerEvent::ChallengeFailed {
                batch: 0,
                challenger: a
            },
            LedgerEvent::Slashed {
                who: a,
                amount: 100,
                reward_to: p,
                reward: 40,
                burned: 60
            },
        ]
    );
    assert_eq!(status(&ledger, 0), BatchStatus::Pending);
    assert_eq!(ledger.balance(&a), 900);
    assert_eq!(ledger.balance(&p), 940);
    // A replay of the same challenge cannot slash alice twice; bob may still try (and lose).
    let events = apply(
        &mut ledger,
        5,
        &[alice_challenge, challenge(&bob(), 0, 0, world.good(0))],
        &oracle,
    );
    assert_eq!(skipped(&events), vec![(0, SkipReason::AlreadyChallenged)]);
    assert_eq!(ledger.balance(&b), 900);
    assert_eq!(ledger.batch(0).unwrap().failed_challengers, vec![a, b]);
    // The claim keeps its deadline.
    assert!(apply(&mut ledger, 6, &[], &oracle).is_empty());
    apply(&mut ledger, 7, &[], &oracle);
    assert_eq!(status(&ledger, 0), BatchStatus::Finalized { at: 7 });
    assert!(ledger.batch(0).unwrap().failed_challengers.is_empty());
    assert_eq!(ledger.balance(&p), 1080);
    assert_eq!(ledger.burned(), 120);
    assert_conserved(&ledger);
}

#[test]
fn invalid_challenges_are_skipped_with_their_reason() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let mut ledger = ledger();
    advance(&mut ledger, 2, &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.bad(0))], &oracle);
    let wrong_chain = SettlementMessage::Challenge(lamina_primitives::bridge::Challenge::sign(
        "another-chain",
        &alice(),
        lamina_primitives::bridge::ChallengeData {
            batch: 0,
            attempt: 0,
            output_root: world.bad(0),
        },
    ));
    let messages = [
        challenge(&alice(), 5, 0, world.bad(0)),
        challenge(&alice(), 0, 0, world.good(0)),
        challenge(&alice(), 0, 1, world.bad(0)),
        challenge(&proposer(), 0, 0, world.bad(0)),
        challenge(&carol(), 0, 0, world.bad(0)),
        wrong_chain,
    ];
    let before = ledger.clone();
    let events = apply(&mut ledger, 4, &messages, &oracle);
    assert_eq!(
        skipped(&events),
        vec![
            (0, SkipReason::UnknownBatch),
            (1, SkipReason::WrongClaim),
            (2, SkipReason::WrongClaim),
            (3, SkipReason::SelfChallenge),
            (
                4,
                SkipReason::InsufficientBalance {
                    balance: 0,
                    needed: 100
                }
            ),
            (5, SkipReason::BadSignature),
        ]
    );
    assert_eq!(ledger.batches(), before.batches());
    assert_eq!(ledger.balances(), before.balances());
    // A finalized claim is no longer open to challenges.
    let mut honest = self::ledger();
    advance(&mut honest, 2, &oracle);
    apply(&mut honest, 3, &[claim(0, 0, world.good(0))], &oracle);
    advance(&mut honest, 7, &oracle);
    let events = apply(
        &mut honest,
        8,
        &[challenge(&alice(), 0, 0, world.good(0))],
        &oracle,
    );
    assert_eq!(skipped(&events), vec![(0, SkipReason::NotPending)]);
}

#[test]
fn an_undecided_challenge_holds_the_claim_until_the_oracle_answers() {
    let world = World::new(2);
    let a = addr(&alice());
    let p = addr(&proposer());

    // A wrong claim: once the node has executed the batch, the challenge is upheld.
    let mut ledger = ledger();
    advance(&mut ledger, 2, &blind());
    apply(&mut ledger, 3, &[claim(0, 0, world.bad(0))], &blind());
    let events = apply(
        &mut ledger,
        4,
        &[challenge(&alice(), 0, 0, world.bad(0))],
        &blind(),
    );
    assert_eq!(
        events,
        vec![LedgerEvent::ChallengeOpen {
            batch: 0,
            challenger: a
        }]
    );
    assert_eq!(
        status(&ledger, 0),
        BatchStatus::Challenged {
            challenger: a,
            at: 4,
            bond: 100
        }
    );
    assert_eq!(ledger.locked(), 200);
    let events = apply(
        &mut ledger,
        5,
        &[challenge(&bob(), 0, 0, world.bad(0))],
        &blind(),
    );
    assert_eq!(skipped(&events), vec![(0, SkipReason::NotPending)]);
    // Past the deadline (7) it still cannot finalize.
    assert!(advance(&mut ledger, 9, &blind()).is_empty());
    assert_conserved(&ledger);
    let events = apply(&mut ledger, 10, &[], &world.oracle(2));
    assert!(matches!(
        events.as_slice(),
        [
            LedgerEvent::ChallengeUpheld { batch: 0, .. },
            LedgerEvent::Slashed {
                reward: 40,
                burned: 60,
                ..
            },
            LedgerEvent::BatchRejected { batch: 0, .. },
        ]
    ));
    assert_eq!(ledger.balance(&a), 1040);
    assert_conserved(&ledger);

    // A right claim: the challenge fails late, and the claim and the one after it, both past
    // their deadlines, finalize in that same block, in order.
    let mut ledger = self::ledger();
    advance(&mut ledger, 2, &blind());
    apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &blind());
    apply(
        &mut ledger,
        4,
        &[challenge(&alice(), 0, 0, world.good(0))],
        &blind(),
    );
    apply(&mut ledger, 5, &[claim(1, 0, world.good(1))], &blind());
    assert!(advance(&mut ledger, 10, &blind()).is_empty());
    assert_eq!(ledger.batch(1).unwrap().status, BatchStatus::Pending);
    let events = apply(&mut ledger, 11, &[], &world.oracle(4));
    assert_eq!(
        events,
        vec![
            LedgerEvent::ChallengeFailed {
                batch: 0,
                challenger: a
            },
            LedgerEvent::Slashed {
                who: a,
                amount: 100,
                reward_to: p,
                reward: 40,
                burned: 60
            },
            LedgerEvent::BatchFinalized {
                batch: 0,
                last_height: 2,
                output_root: world.good(0)
            },
            LedgerEvent::BatchFinalized {
                batch: 1,
                last_height: 4,
                output_root: world.good(1)
            },
        ]
    );
    assert_eq!(ledger.balance(&p), 1040);
    assert_conserved(&ledger);
}

#[test]
fn disputable_lists_the_open_claims_this_node_disagrees_with() {
    let world = World::new(2);
    let mut ledger = ledger();
    let oracle = world.oracle(u64::MAX);
    advance(&mut ledger, 2, &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &oracle);
    apply(&mut ledger, 4, &[], &oracle);
    apply(&mut ledger, 5, &[claim(1, 0, world.bad(1))], &oracle);
    let wrong: Vec<u64> = ledger.disputable(&oracle).iter().map(|b| b.index).collect();
    assert_eq!(wrong, vec![1]);
    assert!(ledger.disputable(&blind()).is_empty());
}

#[test]
fn deposits_check_nonce_balance_and_signature_and_queue_in_order() {
    let world = World::new(2);
    let oracle = world.oracle(0);
    let (a, b, c) = (addr(&alice()), addr(&bob()), addr(&carol()));
    let mut ledger = ledger();
    let forged = match deposit(&bob(), c, 10, 0) {
        SettlementMessage::Deposit(mut d) => {
            d.amount = 11;
            SettlementMessage::Deposit(d)
        }
        _ => unreachable!(),
    };
    let events = apply(
        &mut ledger,
        1,
        &[
            deposit(&alice(), c, 300, 0),
            deposit(&alice(), c, 300, 0),
            deposit(&alice(), c, 800, 1),
            deposit(&alice(), c, 0, 1),
            forged,
            deposit(&bob(), a, 200, 0),
        ],
        &oracle,
    );
    assert_eq!(
        events,
        vec![
            LedgerEvent::DepositQueued {
                id: 0,
                from: a,
                to: c,
                amount: 300
            },
            LedgerEvent::Skipped {
                index_in_block: 1,
                reason: SkipReason::BadNonce { expected: 1 }
            },
            LedgerEvent::Skipped {
                index_in_block: 2,
                reason: SkipReason::InsufficientBalance {
                    balance: 700,
                    needed: 800
                }
            },
            LedgerEvent::Skipped {
                index_in_block: 3,
                reason: SkipReason::ZeroAmount
            },
            LedgerEvent::Skipped {
                index_in_block: 4,
                reason: SkipReason::BadSignature
            },
            LedgerEvent::DepositQueued {
                id: 1,
                from: b,
                to: a,
                amount: 200
            },
        ]
    );
    assert_eq!((ledger.balance(&a), ledger.balance(&b)), (700, 800));
    assert_eq!((ledger.deposit_nonce(&a), ledger.deposit_nonce(&c)), (1, 0));
    apply(&mut ledger, 2, &[deposit(&alice(), a, 700, 1)], &oracle);
    assert_eq!(ledger.balance(&a), 0);
    assert!(!ledger.balances().contains_key(&a));
    assert_eq!(ledger.next_deposit_id(), 3);
    assert_eq!(ledger.escrowed(), 1200);
    assert_conserved(&ledger);

    let at = |ledger: &OptimisticLedger, height: u64| -> Vec<QueuedDeposit> {
        ledger.deposits_queued_at(height).copied().collect()
    };
    let ids: Vec<u64> = (1..=2).flat_map(|h| at(&ledger, h)).map(|d| d.id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    assert_eq!(
        at(&ledger, 2),
        vec![QueuedDeposit {
            id: 2,
            from: a,
            to: a,
            amount: 700,
            queued_at: 2
        }]
    );
    assert_eq!(at(&ledger, 1).len(), 2);
    assert!(at(&ledger, 3).is_empty());
    assert!(at(&ledger, 9).is_empty());
    let mut pruned = ledger.clone();
    pruned.prune_deposits_queued_through(1);
    assert!(at(&pruned, 1).is_empty());
    assert_eq!(at(&pruned, 2)[0].id, 2);
    pruned.prune_deposits_queued_through(10);
    assert!(at(&pruned, 2).is_empty());
    // Pruning is housekeeping: the next deposit still gets the next id.
    apply(&mut pruned, 3, &[deposit(&bob(), a, 1, 1)], &oracle);
    assert_eq!(at(&pruned, 3)[0].id, 3);
}

/// A ledger where alice deposited 500 and batches 0 and 1 are claimed at 3 and 5 (so they
/// finalize at 7 and 9), advanced to `height`.
fn bridged(world: &World, height: u64) -> OptimisticLedger {
    let oracle = world.oracle(u64::MAX);
    let mut ledger = ledger();
    apply(
        &mut ledger,
        1,
        &[deposit(&alice(), addr(&alice()), 500, 0)],
        &oracle,
    );
    apply(&mut ledger, 2, &[], &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &oracle);
    apply(&mut ledger, 4, &[], &oracle);
    apply(&mut ledger, 5, &[claim(1, 0, world.good(1))], &oracle);
    advance(&mut ledger, height, &oracle);
    ledger
}

/// Applies each of `messages` in a block of its own, checking first that `check_finalize`
/// predicts its outcome; returns each message's outcome event.
fn apply_finalizes(
    ledger: &mut OptimisticLedger,
    world: &World,
    messages: &[lamina_primitives::bridge::FinalizeWithdrawal],
) -> Vec<LedgerEvent> {
    let height = ledger.applied_height() + 1;
    let mut events = Vec::new();
    for message in messages {
        let predicted = ledger.check_finalize(message);
        let got = apply(
            ledger,
            ledger.applied_height() + 1,
            &[SettlementMessage::FinalizeWithdrawal(message.clone())],
            &world.oracle(u64::MAX),
        );
        match predicted {
            Ok(()) => assert!(matches!(
                got.first(),
                Some(LedgerEvent::WithdrawalFinalized { .. })
            )),
            Err(reason) => assert_eq!(skipped(&got), vec![(0, reason)]),
        }
        // The message's own outcome comes first, before the time step's events.
        events.push(got[0].clone());
    }
    assert!(ledger.applied_height() >= height);
    events
}

#[test]
fn a_proven_withdrawal_is_credited_once() {
    let world = World::new(2);
    let c = addr(&carol());
    let mut ledger = bridged(&world, 7);
    assert_eq!(ledger.finalized_batches(), 1);
    let first = world.finalize(0, 0);
    let events = apply_finalizes(&mut ledger, &world, &[first.clone(), first.clone()]);
    assert_eq!(
        events,
        vec![
            LedgerEvent::WithdrawalFinalized {
                id: 0,
                batch: 0,
                to: c,
                amount: 50
            },
            LedgerEvent::Skipped {
                index_in_block: 0,
                reason: SkipReason::AlreadyFinalized
            },
        ]
    );
    assert_eq!(ledger.balance(&c), 50);
    assert!(ledger.is_withdrawal_finalized(0));
    assert_eq!(ledger.total_withdrawn(), 50);
    assert_eq!(ledger.escrowed(), 450);
    assert_conserved(&ledger);

    // The tree is cumulative: a later finalized batch proves earlier withdrawals too.
    advance(&mut ledger, 10, &world.oracle(u64::MAX));
    assert_eq!(ledger.finalized_batches(), 2);
    let events = apply_finalizes(
        &mut ledger,
        &world,
        &[world.finalize(1, 1), world.finalize(1, 0)],
    );
    assert_eq!(
        skipped(&events),
        vec![(0, SkipReason::AlreadyFinalized)],
        "{events:?}"
    );
    assert_eq!(ledger.balance(&addr(&alice())), 500 + 70);
    assert_conserved(&ledger);
}

#[test]
fn bad_withdrawal_finalizations_are_refused_with_their_reason() {
    let world = World::new(2);
    // Block 6: batch 0 is pending (it finalizes at 7).
    let mut ledger = bridged(&world, 6);
    let early = world.finalize(0, 0);
    let unknown = world.finalize(5, 3);
    assert_eq!(ledger.check_finalize(&early), Err(SkipReason::NotFinalized));
    assert_eq!(
        ledger.check_finalize(&unknown),
        Err(SkipReason::UnknownBatch)
    );
    let events = apply_finalizes(&mut ledger, &world, &[early, unknown]);
    assert_eq!(events.len(), 2);
    assert_eq!(ledger.applied_height(), 8);
    assert_eq!(ledger.finalized_batches(), 1);

    let valid = world.finalize(0, 1);
    let wrong_preimage = lamina_primitives::bridge::FinalizeWithdrawal {
        preimage: world.preimage(1),
        ..valid.clone()
    };
    let forged_amount = lamina_primitives::bridge::FinalizeWithdrawal {
        withdrawal: Withdrawal {
            amount: 71,
            ..valid.withdrawal
        },
        ..valid.clone()
    };
    let forged_recipient = lamina_primitives::bridge::FinalizeWithdrawal {
        withdrawal: Withdrawal {
            to: addr(&bob()),
            ..valid.withdrawal
        },
        ..valid.clone()
    };
    let wrong_id = lamina_primitives::bridge::FinalizeWithdrawal {
        withdrawal: world.withdrawals[0],
        ..valid.clone()
    };
    // Withdrawal 2 exists, but only after batch 0: batch 0's tree does not hold it.
    let later = world.finalize(1, 2);
    let not_yet_in_tree = lamina_primitives::bridge::FinalizeWithdrawal {
        batch: 0,
        preimage: world.preimage(0),
        ..later
    };
    // Batch 1 finalizes at 9, so that balances move no more below.
    advance(&mut ledger, 9, &world.oracle(u64::MAX));
    let c = addr(&carol());
    let before = ledger.balances().clone();
    let events = apply_finalizes(
        &mut ledger,
        &world,
        &[
            wrong_preimage,
            forged_amount,
            forged_recipient,
            wrong_id,
            not_yet_in_tree,
        ],
    );
    assert_eq!(
        skipped(&events),
        vec![
            (0, SkipReason::WrongPreimage),
            (0, SkipReason::BadProof),
            (0, SkipReason::BadProof),
            (0, SkipReason::ProofIndexMismatch { index: 1, id: 0 }),
            (0, SkipReason::BadProof),
        ]
    );
    assert_eq!(ledger.balances(), &before);
    assert_eq!(ledger.balance(&c), 0);
    assert_conserved(&ledger);
}

#[test]
fn withdrawals_are_paid_only_from_what_was_deposited() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let mut ledger = ledger();
    advance(&mut ledger, 2, &oracle);
    apply(&mut ledger, 3, &[claim(0, 0, world.good(0))], &oracle);
    advance(&mut ledger, 7, &oracle);
    let withdrawal = world.finalize(0, 1);
    assert_eq!(
        ledger.check_finalize(&withdrawal),
        Err(SkipReason::EscrowInsufficient { escrowed: 0 })
    );
    apply(
        &mut ledger,
        8,
        &[deposit(&bob(), addr(&bob()), 69, 0)],
        &oracle,
    );
    assert_eq!(
        ledger.check_finalize(&withdrawal),
        Err(SkipReason::EscrowInsufficient { escrowed: 69 })
    );
    // Refused, not consumed: it succeeds once the bridge holds enough.
    apply(
        &mut ledger,
        9,
        &[
            SettlementMessage::FinalizeWithdrawal(withdrawal.clone()),
            deposit(&bob(), addr(&bob()), 1, 1),
            SettlementMessage::FinalizeWithdrawal(withdrawal.clone()),
        ],
        &oracle,
    );
    assert!(ledger.is_withdrawal_finalized(1));
    assert_eq!(ledger.escrowed(), 0);
    assert_eq!(ledger.balance(&addr(&alice())), 1070);
    assert_conserved(&ledger);
}

#[test]
fn the_ledger_round_trips_through_borsh() {
    let world = World::new(2);
    let mut ledger = bridged(&world, 8);
    apply_finalizes(&mut ledger, &world, &[world.finalize(0, 0)]);
    let bytes = codec::encode(&ledger);
    let back: OptimisticLedger = codec::decode_trusted(&bytes).unwrap();
    assert_eq!(back, ledger);
}

#[test]
fn proposers_take_turns_and_anyone_listed_may_claim_after_the_timeout() {
    let world = World::new(2);
    let oracle = world.oracle(u64::MAX);
    let p = OptimisticParams {
        proposers: vec![addr(&proposer()), addr(&alice())],
        ..params()
    };
    let mut ledger = ledger_with(p.clone());
    let as_key = |key: &lamina_primitives::Keypair, batch: u64, attempt: u32, root: Hash| {
        claim_as(key, batch, attempt, p.batch_range(batch), root, p.bond)
    };
    // Batch 0 (heights 1..=2) is the proposer's turn from height 3 on, for 3 blocks.
    advance(&mut ledger, 2, &oracle);
    let target = ledger.next_claim();
    assert_eq!(
        (target.designated, target.open_to_all_at),
        (addr(&proposer()), 6)
    );
    let early = apply(
        &mut ledger,
        3,
        &[as_key(&alice(), 0, 0, world.good(0))],
        &oracle,
    );
    assert_eq!(
        skipped(&early),
        vec![(
            0,
            SkipReason::NotYourTurn {
                designated: addr(&proposer()),
                open_to_all_at: 6
            }
        )]
    );
    // Batch 1 is alice's turn, counted from the block that claimed batch 0 at the earliest.
    apply(
        &mut ledger,
        4,
        &[as_key(&proposer(), 0, 0, world.bad(0))],
        &oracle,
    );
    let target = ledger.next_claim();
    assert_eq!(
        (target.batch, target.designated, target.open_to_all_at),
        (1, addr(&alice()), 8)
    );
    // The proposer's claim of batch 0 is wrong: bob's challenge rejects it at height 5, and
    // attempt 1 is alice's turn, from the rejection on.
    apply(
        &mut ledger,
        5,
        &[challenge(&bob(), 0, 0, world.bad(0))],
        &oracle,
    );
    let target = ledger.next_claim();
    assert_eq!(
        (target.batch, target.attempt, target.designated),
        (0, 1, addr(&alice()))
    );
    assert_eq!(target.open_to_all_at, 8);
    // Alice stays silent: from height 8 the proposer may claim in her place.
    advance(&mut ledger, 6, &oracle);
    let still_early = apply(
        &mut ledger,
        7,
        &[as_key(&proposer(), 0, 1, world.good(0))],
        &oracle,
    );
    assert!(matches!(
        skipped(&still_early)[..],
        [(0, SkipReason::NotYourTurn { .. })]
    ));
    let late = apply(
        &mut ledger,
        8,
        &[as_key(&proposer(), 0, 1, world.good(0))],
        &oracle,
    );
    assert!(skipped(&late).is_empty(), "{late:?}");
    let batch = ledger.batch(0).unwrap();
    assert_eq!(batch.attempt, 1);
    // The rejected attempt stays in the batch's history.
    assert_eq!(batch.rejected_claims.len(), 1);
    let rejected = batch.rejected_claims[0];
    assert_eq!(
        (rejected.attempt, rejected.proposer, rejected.output_root),
        (0, addr(&proposer()), world.bad(0))
    );
    assert_eq!((rejected.included_at, rejected.rejected_at), (4, 5));
    assert!(matches!(
        rejected.reason,
        RejectReason::WrongOutput { correct_root, .. } if correct_root == world.good(0)
    ));
    // Someone not listed never may.
    let target = ledger.next_claim();
    advance(&mut ledger, target.open_to_all_at, &oracle);
    let outsider = apply(
        &mut ledger,
        target.open_to_all_at + 1,
        &[as_key(&bob(), 1, 0, world.good(1))],
        &oracle,
    );
    assert_eq!(skipped(&outsider), vec![(0, SkipReason::NotProposer)]);
    // The proposer's wrong claim took it out of the rotation: batch 2, its turn by index,
    // falls to alice.
    assert!(ledger.jailed().contains(&addr(&proposer())));
    let height = ledger.applied_height() + 1;
    let events = apply(
        &mut ledger,
        height,
        &[as_key(&alice(), 1, 0, world.good(1))],
        &oracle,
    );
    assert!(skipped(&events).is_empty(), "{events:?}");
    let target = ledger.next_claim();
    assert_eq!((target.batch, target.designated), (2, addr(&alice())));
    assert_conserved(&ledger);
}
