//! The execution actor: owns the store, the mempool, the executor and the withdrawals tree,
//! and answers [`ExecutionRequest`]s one at a time on its own thread.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use lamina_primitives::bridge::DepositCredit;
use lamina_primitives::interfaces::execution::{
    AccountAt, AccountProof, ExecutedBlock, ExecutionError, ExecutionEvent, ExecutionRequest,
    ExecutionStatus, MempoolRejection, QueryError, TxLookup, WithdrawalAt,
};
use lamina_primitives::interfaces::Events;
use lamina_primitives::merkle::MerkleProof;
use lamina_primitives::{Account, Address, Block, Genesis, Hash, Transaction};
use tokio::sync::mpsc;

use crate::bridge::{assign_withdrawal_ids, Credited, WithdrawalTree};
use crate::executor::{executor_for, BlockEnv, Executor, PreVerified};
use crate::mempool::{Mempool, MempoolLimits};
use crate::state::{account_key_hash, BlockCommit, Store, StoreError};
use crate::{ExecutionConfig, SetupError};

/// The execution layer's state and request handlers. The handlers are plain methods, so tests
/// can drive them without channels.
#[derive(Debug)]
pub(crate) struct Actor {
    pub(crate) store: Store,
    executor: Box<dyn Executor>,
    mempool: Mempool,
    events: Events<ExecutionEvent>,
    chain_id: String,
    fee_per_transaction: u64,
    executed_height: u64,
    /// The state root reported for `executed_height` (see
    /// [`ExecutionConfig::report_wrong_roots`]).
    state_root: Hash,
    /// Every withdrawal up to `executed_height`.
    withdrawals: WithdrawalTree,
    report_wrong_roots: bool,
}

fn storage(error: StoreError) -> ExecutionError {
    ExecutionError::Storage(error.to_string())
}

fn query_storage(error: StoreError) -> QueryError {
    match error {
        StoreError::Pruned { version, oldest } => QueryError::HeightPruned {
            height: version,
            oldest,
        },
        error => QueryError::Storage(error.to_string()),
    }
}

impl Actor {
    /// Opens the store (writing genesis into an empty one) and builds the actor.
    pub(crate) fn open(
        config: &ExecutionConfig,
        genesis: &Genesis,
        db: &sled::Db,
        events: Events<ExecutionEvent>,
    ) -> Result<Actor, SetupError> {
        config.validate().map_err(SetupError::InvalidConfig)?;
        genesis.validate().map_err(SetupError::InvalidGenesis)?;
        let store = Store::open(db, config.retention())?;
        let expected = genesis.hash();
        let executed_height = match (store.genesis_hash()?, store.executed_height()?) {
            (Some(stored), Some(height)) => {
                if stored != expected {
                    return Err(SetupError::GenesisMismatch { stored, expected });
                }
                height
            }
            // Genesis is written in one atomic batch with the executed height, so a store with
            // only one of the two was not written by us.
            (None, None) => {
                let root = store.write_genesis(genesis)?;
                tracing::info!(state_root = %root, "wrote genesis state");
                0
            }
            _ => {
                return Err(SetupError::Storage(StoreError::Corrupt {
                    what: "metadata",
                    detail: "genesis hash and executed height must both be present or both absent"
                        .into(),
                }))
            }
        };
        // The latest summary holds the root this node reported (which the testing fault makes
        // differ from the tree's) and the withdrawal count; genesis has none.
        let latest = store.executed_block(executed_height)?;
        let state_root = match &latest {
            Some(executed) => executed.state_root,
            None => store.root(executed_height)?,
        };
        let withdrawal_count = latest.map_or(0, |executed| executed.withdrawal_count);
        let withdrawals = WithdrawalTree::new(&store.withdrawals(withdrawal_count)?);
        if config.report_wrong_roots {
            tracing::warn!(
                "report_wrong_roots is on: this node reports a wrong state root for every block \
                 it executes (a testing fault; its state and account proofs stay correct)"
            );
        }
        let executor = executor_for(config);
        let mempool = Mempool::new(
            MempoolLimits::from(config),
            &genesis.chain_id,
            genesis.fee_per_transaction,
            executed_height,
        );
        tracing::info!(
            executor = executor.name(),
            executed_height,
            %state_root,
            withdrawals = withdrawal_count,
            "execution layer ready"
        );
        Ok(Actor {
            store,
            executor,
            mempool,
            events,
            chain_id: genesis.chain_id.clone(),
            fee_per_transaction: genesis.fee_per_transaction,
            executed_height,
            state_root,
            withdrawals,
            report_wrong_roots: config.report_wrong_roots,
        })
    }

    /// Answers requests until every handle is dropped. Blocks the calling thread.
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<ExecutionRequest>) {
        while let Some(request) = requests.blocking_recv() {
            self.handle(request);
        }
        tracing::debug!("execution actor stopped: all handles dropped");
    }

    fn handle(&mut self, request: ExecutionRequest) {
        // A dropped reply receiver means the caller gave up; there is nobody to tell.
        match request {
            ExecutionRequest::SubmitTransaction { transaction, reply } => {
                let _ = reply.send(self.submit(transaction));
            }
            ExecutionRequest::SubmitTransactions {
                transactions,
                reply,
            } => {
                let _ = reply.send(self.submit_batch(transactions));
            }
            ExecutionRequest::ReapTransactions {
                height,
                max_transactions,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(self.reap(height, max_transactions, max_bytes));
            }
            ExecutionRequest::ExecuteBlock {
                block,
                deposits,
                reply,
            } => {
                let _ = reply.send(self.execute_block(&block, &deposits));
            }
            ExecutionRequest::GetStatus { reply } => {
                let _ = reply.send(self.status());
            }
            ExecutionRequest::GetAccount {
                address,
                height,
                reply,
            } => {
                let _ = reply.send(self.account(&address, height));
            }
            ExecutionRequest::GetAccountProof {
                address,
                height,
                reply,
            } => {
                let _ = reply.send(self.account_proof(&address, height));
            }
            ExecutionRequest::GetTransaction { hash, reply } => {
                let _ = reply.send(self.transaction(&hash));
            }
            ExecutionRequest::GetExecutedBlock { height, reply } => {
                let _ = reply.send(self.store.executed_block(height).map_err(query_storage));
            }
            ExecutionRequest::GetWithdrawal { id, reply } => {
                let _ = reply.send(self.withdrawal(id));
            }
            ExecutionRequest::ProveWithdrawal { id, height, reply } => {
                let _ = reply.send(self.prove_withdrawal(id, height));
            }
        }
    }

    /// The latest executed nonce of `address`, `None` (logged) when storage fails: the
    /// mempool then leaves the sender alone rather than guessing.
    fn latest_nonce(store: &Store, version: u64, address: &Address) -> Option<u64> {
        match store.account(address, version) {
            Ok(account) => Some(account.unwrap_or_default().nonce),
            Err(error) => {
                tracing::error!(%address, %error, "reading an account for the mempool failed");
                None
            }
        }
    }

    pub(crate) fn submit(&mut self, transaction: Transaction) -> Result<Hash, MempoolRejection> {
        let account = self.sender_account(&transaction)?;
        self.mempool.insert(transaction, account)
    }

    /// [`Self::submit`] for many, with their signatures verified as one batch.
    pub(crate) fn submit_batch(
        &mut self,
        transactions: Vec<Transaction>,
    ) -> Vec<Result<Hash, MempoolRejection>> {
        let count = transactions.len();
        let mut submissions = Vec::with_capacity(count);
        // A batch holds several transactions of most of its senders; each account is read
        // once.
        let mut accounts = HashMap::new();
        for transaction in transactions {
            let account = match accounts.entry(transaction.sender) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => match self.sender_account(&transaction) {
                    Ok(account) => *entry.insert(account),
                    // The store cannot be read: no verdict on any of them.
                    Err(rejection) => return vec![Err(rejection); count],
                },
            };
            submissions.push((transaction, account));
        }
        self.mempool.insert_batch(submissions)
    }

    /// The sender's account in the latest executed state (empty if it has none yet).
    fn sender_account(&self, transaction: &Transaction) -> Result<Account, MempoolRejection> {
        match self
            .store
            .account(&transaction.sender, self.executed_height)
        {
            Ok(account) => Ok(account.unwrap_or_default()),
            Err(error) => {
                tracing::error!(%error, "reading the sender's account failed");
                Err(MempoolRejection::StateUnavailable(error.to_string()))
            }
        }
    }

    pub(crate) fn reap(
        &mut self,
        height: u64,
        max_transactions: usize,
        max_bytes: usize,
    ) -> Vec<Transaction> {
        let (store, version) = (&self.store, self.executed_height);
        self.mempool
            .reap(height, max_transactions, max_bytes, |address| {
                Self::latest_nonce(store, version, address)
            })
    }

    /// Executes the next height: credits `deposits`, runs the block's transactions, numbers
    /// its withdrawals, and commits it all at once. An executed height answers with its
    /// stored result, whatever `deposits` says.
    pub(crate) fn execute_block(
        &mut self,
        block: &Block,
        deposits: &[DepositCredit],
    ) -> Result<ExecutedBlock, ExecutionError> {
        let height = block.height();
        let expected = self.executed_height.saturating_add(1);
        if height == 0 || height > expected {
            return Err(ExecutionError::OutOfOrder {
                expected,
                got: height,
            });
        }
        if height < expected {
            return self.replay(block);
        }

        let transactions = block.transactions();
        let env = BlockEnv {
            height,
            proposer: block.header.proposer,
            chain_id: &self.chain_id,
            fee_per_transaction: self.fee_per_transaction,
        };
        let view = self.store.view(self.executed_height);
        let credited = Credited::new(&view, deposits).map_err(storage)?;
        // Taken before `executed` below drops the included transactions from the mempool.
        let pre_verified = self.pre_verified(&transactions);
        let mut output = self
            .executor
            .execute(
                &env,
                &transactions,
                PreVerified::new(&pre_verified),
                &credited,
            )
            .map_err(storage)?;
        output.writes = credited.merge(std::mem::take(&mut output.writes));
        let withdrawals = assign_withdrawal_ids(
            self.withdrawals.count(),
            &transactions,
            &mut output.receipts,
        );
        let withdrawals_root = self.withdrawals.root_with(&withdrawals);
        let executed = self
            .store
            .commit_block(&BlockCommit {
                height,
                block_hash: block.hash(),
                data_root: block.header.data_root,
                transactions: &transactions,
                output: &output,
                deposits_credited: u32::try_from(deposits.len()).unwrap_or(u32::MAX),
                withdrawals: &withdrawals,
                withdrawals_root,
                withdrawal_count: self
                    .withdrawals
                    .count()
                    .saturating_add(withdrawals.len() as u64),
                report_wrong_root: self.report_wrong_roots,
            })
            .map_err(storage)?;
        // Only once committed: a failed commit leaves the tree at the previous height.
        self.withdrawals.append(&withdrawals, withdrawals_root);
        self.executed_height = height;
        self.state_root = executed.state_root;

        // A sender whose nonce changed is in the block's writes; the store is read only for
        // the others (their transactions left no trace).
        let (store, writes) = (&self.store, &output.writes);
        self.mempool
            .executed(height, &transactions, |address| match writes.get(address) {
                Some(account) => Some(account.nonce),
                None => Self::latest_nonce(store, height, address),
            });
        tracing::debug!(
            height,
            transactions = executed.transactions,
            failed = executed.failed,
            deposits = executed.deposits_credited,
            withdrawals = withdrawals.len(),
            state_root = %executed.state_root,
            "executed block"
        );
        self.events
            .publish(ExecutionEvent::Executed(executed.clone()));
        Ok(executed)
    }

    /// For each of a block's transactions, whether this node's mempool already verified its
    /// signature (it was admitted here, or verified and then refused or dropped), so execution
    /// skips that check. A transaction seen only in the block, or before a restart, is not
    /// known and gets verified at execution.
    pub(crate) fn pre_verified(&self, transactions: &[Transaction]) -> Vec<bool> {
        self.mempool.pre_verified(transactions)
    }

    /// An already executed height: its stored result, without executing anything.
    fn replay(&self, block: &Block) -> Result<ExecutedBlock, ExecutionError> {
        let height = block.height();
        let stored = self
            .store
            .executed_block(height)
            .map_err(storage)?
            .ok_or_else(|| {
                ExecutionError::Storage(format!("no stored result for executed height {height}"))
            })?;
        if stored.block_hash != block.hash() {
            // Consensus commits one block per height; a different one is a fork or a mixed-up
            // database, never something to paper over.
            return Err(ExecutionError::ConflictingBlock {
                height,
                executed: stored.block_hash,
                given: block.hash(),
            });
        }
        Ok(stored)
    }

    pub(crate) fn status(&self) -> ExecutionStatus {
        ExecutionStatus {
            executor: self.executor.name().to_string(),
            executed_height: self.executed_height,
            state_root: self.state_root,
            mempool_transactions: self.mempool.len(),
            mempool_bytes: self.mempool.bytes(),
        }
    }

    fn readable_height(&self, height: Option<u64>) -> Result<u64, QueryError> {
        match height {
            None => Ok(self.executed_height),
            Some(height) if height <= self.executed_height => Ok(height),
            Some(height) => Err(QueryError::HeightNotExecuted {
                height,
                latest: self.executed_height,
            }),
        }
    }

    pub(crate) fn account(
        &self,
        address: &Address,
        height: Option<u64>,
    ) -> Result<AccountAt, QueryError> {
        let height = self.readable_height(height)?;
        let account = self
            .store
            .account(address, height)
            .map_err(query_storage)?
            .unwrap_or_default();
        Ok(AccountAt {
            address: *address,
            height,
            account,
        })
    }

    pub(crate) fn account_proof(
        &self,
        address: &Address,
        height: Option<u64>,
    ) -> Result<AccountProof, QueryError> {
        let height = self.readable_height(height)?;
        let state_root = self.store.root(height).map_err(query_storage)?;
        let (account, proof) = self
            .store
            .account_proof(address, height)
            .map_err(query_storage)?;
        Ok(AccountProof {
            address: *address,
            height,
            state_root,
            key_hash: account_key_hash(address),
            account,
            proof,
        })
    }

    pub(crate) fn withdrawal(&self, id: u64) -> Result<Option<WithdrawalAt>, QueryError> {
        self.store.withdrawal(id).map_err(query_storage)
    }

    /// The proof of withdrawal `id` against the withdrawals root of executed height `height`:
    /// in the tree of the withdrawals that height's summary counts.
    pub(crate) fn prove_withdrawal(
        &self,
        id: u64,
        height: u64,
    ) -> Result<Option<MerkleProof>, QueryError> {
        let height = self.readable_height(Some(height))?;
        let count = if height == 0 {
            0
        } else {
            self.store
                .executed_block(height)
                .map_err(query_storage)?
                .ok_or_else(|| {
                    QueryError::Storage(format!("no stored result for executed height {height}"))
                })?
                .withdrawal_count
        };
        Ok(self.withdrawals.prove(id, count))
    }

    pub(crate) fn transaction(&self, hash: &Hash) -> Result<Option<TxLookup>, QueryError> {
        if let Some(transaction) = self.mempool.get(hash) {
            return Ok(Some(TxLookup::Pending {
                transaction: transaction.clone(),
            }));
        }
        let found = self
            .store
            .included_transaction(hash)
            .map_err(query_storage)?;
        Ok(found.map(|(transaction, receipt)| TxLookup::Included {
            transaction,
            receipt,
        }))
    }
}
