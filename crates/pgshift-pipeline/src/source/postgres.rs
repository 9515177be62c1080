//! A PostgreSQL database as a load source: the catalog decides tables, types and
//! DDL; every chunk is read under one exported snapshot (the run's slot exports it
//! when catch-up follows, so the copy and the stream meet at L0); large tables are
//! read in key or block ranges ([`super::chunks`]).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use pgshift_postgres::Session;
use pgshift_postgres::catalog::{self, Catalog, Table};
use pgshift_postgres::copy::{copy_in_sql, copy_out_batched, copy_out_sql, CopyFormat};
use pgshift_postgres::ddl;
use pgshift_postgres::large_objects::{self, Carry};
use pgshift_postgres::objects::{self, ObjectKind, SchemaObjects};
use pgshift_postgres::error::Context;
use pgshift_postgres::schema_map::relocate_extensions;
use pgshift_postgres::sql::quote_literal;
use pgshift_postgres::ConnInfo;
use tokio::sync::mpsc;

use super::chunks::chunk_table;
use crate::plan::select::{select_tables, with_partition_parents};
use super::{ChunkReader, LoadPlan, LoadSource, Snapshot, TableLoad};
use crate::embed::catchup::catchup_ddl;
use crate::embed::chunks::ChunkTable;
use crate::embed::copy as embed_copy;
use crate::error::{Error, Result};
use crate::plan::embedding::{specs_by_table, EmbeddingSpec};
use crate::plan::MigrateOptions;
use crate::run::store::Store;
use crate::run::{slot, Run};
use crate::source::preflight::{self, Checks};

#[derive(Clone)]
pub struct PostgresSource {
    conn: ConnInfo,
}

impl PostgresSource {
    pub fn new(conn: ConnInfo) -> PostgresSource {
        PostgresSource { conn }
    }

    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }
}

impl LoadSource for PostgresSource {
    fn name(&self) -> &str {
        self.conn.endpoint()
    }

    fn can_follow(&self) -> bool {
        true
    }

    async fn plan(&self, dst: &Session, opts: &MigrateOptions, resuming: Option<&Run>) -> Result<LoadPlan<Table>> {
        let dst_name = dst.endpoint();
        let src = self.conn.session().await?;
        let mut catalog = catalog::inspect(&src).await?;
        crate::plan::casts::apply(&mut catalog, &opts.casts)?;
        let tables = match resuming {
            Some(run) => tables_of_run(&Store::new(dst).run_table_names(run.run_id).await?, run, &catalog)?,
            None => select_tables(&catalog, &opts.plan.patterns)?,
        };
        let needs_slot = opts.follow && resuming.is_none_or(|r| r.start_lsn.is_none());
        let specs = match &opts.embedding {
            Some(setup) => specs_by_table(setup, &tables)?,
            None => HashMap::new(),
        };
        // The tables that get vectors (partitions take theirs from the parent).
        let embedded: Vec<(&Table, &EmbeddingSpec)> =
            tables.iter().filter(|t| t.partition_of.is_none()).filter_map(|t| specs.get(&t.display_name()).map(|s| (*t, s))).collect();
        let mut problems = preflight::embedding_problems(&src, dst, &tables, &specs).await?;
        problems.extend(super::casts::check(&src, &tables).await?);
        // The application's own chunk tables get their schema with the tables, and
        // their rows from pgshift, not from the source.
        let (application_chunks, more) = preflight::application_chunk_tables(&catalog, &embedded);
        problems.extend(more);
        if !problems.is_empty() {
            return Err(Error::Preflight(problems));
        }
        let copied = |t: &Table| !application_chunks.iter().any(|a| a.oid == t.oid);
        let mut tables = tables;
        tables.extend(application_chunks.iter().filter(|a| !tables.iter().any(|t| t.oid == a.oid)).copied().collect::<Vec<_>>());
        // The catalog and the tables as the target gets them (other schemas with
        // --map-schema, extensions where the target already has them).
        let installed = catalog::installed_extensions(dst).await?;
        let view = relocate_extensions(&opts.schema_map.target_view(&catalog), &installed);
        let target_tables = view.same_tables(&tables);
        let checks = Checks { needs_slot, resume: resuming.is_some(), follow: opts.follow };
        let objects = schema_objects(&src, dst, &catalog, &tables, &opts.schema_map).await?;
        let access = &objects.access;
        let large_objects = large_objects::count(&src).await?;
        let (lo_owners, lo_grantees) = match large_objects {
            0 => Default::default(),
            _ => large_objects::roles(&src).await?,
        };
        let owner_roles: BTreeSet<String> = access.owner_roles.iter().cloned().chain(lo_owners).collect();
        let mut needed: BTreeSet<String> = objects.roles.iter().cloned().collect();
        if opts.privileges {
            needed.extend(access.grant_roles.iter().cloned().chain(lo_grantees));
        }
        if opts.owners {
            needed.extend(owner_roles.iter().cloned());
        }
        let missing = preflight::missing_roles(dst, &needed).await?;
        let mut problems = match (opts.create_roles, missing.is_empty()) {
            (_, true) | (true, _) => Vec::new(),
            (false, false) => vec![preflight::roles_problem(dst_name, &missing)],
        };
        if opts.owners {
            problems.extend(preflight::owner_problems(dst, &owner_roles).await?);
        }
        // The target's large objects are made the same as the source's: ones it holds
        // already would be replaced or removed.
        let on_target = if large_objects > 0 && resuming.is_none() { large_objects::count(dst).await? } else { 0 };
        if large_objects > 0 {
            problems.extend(large_objects::unreadable(&src).await?);
        }
        if on_target > 0 {
            problems.push(format!(
                "the source has {large_objects} large object(s) and target {dst_name} already holds {on_target}: pgshift makes the target's large objects \
                 the same as the source's and would replace or remove those; move them elsewhere first (or migrate into an empty database)"
            ));
        }
        // pgshift's own chunk table is made by the load: the target must not have one by that name.
        for (t, spec) in &embedded {
            let tt = view.same_tables(&[t])[0];
            if let Some(chunks) = ChunkTable::of(tt, spec).filter(|c| c.application().is_none()) {
                let (schema, name) = chunks.schema_and_name();
                let copied = target_tables.iter().any(|x| x.schema == schema && x.name == name);
                if copied || (resuming.is_none() && catalog::relation_exists(dst, schema, name).await?) {
                    problems.push(format!(
                        "embedding for {}: the chunk table {schema}.{name} {}: name another chunk table",
                        t.display_name(),
                        if copied { "is a table being copied" } else { "already exists on the target" }
                    ));
                }
            }
        }
        let (copied_tables, copied_targets): (Vec<&Table>, Vec<&Table>) = tables.iter().zip(&target_tables).filter(|(t, _)| copied(t)).map(|(t, tt)| (*t, *tt)).unzip();
        if let Err(Error::Preflight(more)) = preflight::check(&src, dst, &catalog, (&copied_tables, &copied_targets), &checks).await {
            problems.extend(more);
        }
        if !problems.is_empty() {
            return Err(Error::Preflight(problems));
        }

        let mut plan = LoadPlan::new(catalog::vector_schema(&installed, Some(&view)));
        let vector_schema = plan.vector_schema.clone();
        for (t, tt) in copied_tables.iter().zip(&copied_targets).filter(|(t, _)| t.holds_rows()) {
            let (split, chunks) = chunk_table(&src, t, opts.plan.split_rows).await?;
            let embedding = specs.get(&t.display_name()).cloned();
            let chunk_table = embedding.as_ref().and_then(|s| ChunkTable::of(tt, s)).map(|c| {
                let in_source = ChunkTable::of(t, c.spec).expect("the same spec");
                let application = application_chunks.iter().find(|a| chunk_table_is(&in_source, a)).map(|a| view.same_tables(&[a])[0]);
                c.copy(application)
            });
            let copy_in = match &embedding {
                Some(spec) if chunk_table.is_none() => embed_copy::copy_in_sql(tt, spec),
                _ => copy_in_sql(tt, CopyFormat::for_table(t)),
            };
            plan.tables.push(TableLoad {
                source: (*t).clone(),
                name: t.display_name(),
                target: tt.qualified(),
                copy_in,
                format: CopyFormat::for_table(t),
                split,
                chunks,
                rows_estimate: t.row_estimate,
                size_bytes: t.size_bytes,
                embedding,
                chunk_table,
            });
        }
        // Largest first keeps the workers busy to the end.
        plan.tables.sort_by_key(|t| std::cmp::Reverse(t.size_bytes));
        plan.pre_data = match opts.create_roles {
            true => missing.iter().map(|r| format!("CREATE ROLE {} NOLOGIN", pgshift_postgres::sql::quote_ident(r))).collect(),
            false => Vec::new(),
        };
        let routines = [SchemaObjects::statements(&objects.routines), SchemaObjects::statements(&objects.operators)].concat();
        plan.pre_data.extend(ddl::pre_data(&view, &target_tables, &SchemaObjects::statements(&objects.before_types), &routines));
        plan.pre_data.extend(SchemaObjects::statements(&objects.routines_after_tables));
        // A server built without lz4 cannot take a column compressed with it: the
        // column keeps the target's default compression, and the plan says so.
        let lz4: bool = dst
            .query_one("SELECT coalesce('lz4' = ANY(enumvals), false) FROM pg_settings WHERE name = 'default_toast_compression'", &[])
            .await
            .context(&dst_name, || "ask whether the target has lz4".into())?
            .get(0);
        if !lz4 {
            let (kept, dropped): (Vec<String>, Vec<String>) = plan.pre_data.drain(..).partition(|s| !s.ends_with(" SET COMPRESSION lz4"));
            plan.pre_data = kept;
            plan.warnings.extend(dropped.iter().map(|s| format!("not carried: {s} (the target server is built without lz4)")));
        }
        plan.after_load = SchemaObjects::statements(&objects.views);
        plan.after_load.extend(SchemaObjects::statements(&objects.statistics));
        plan.after_load.extend(SchemaObjects::statements(&objects.comments));
        plan.after_load.extend(SchemaObjects::statements(&objects.policies));
        if opts.privileges {
            plan.after_load.extend(access.grants.iter().cloned());
        }
        // Triggers, row security and owners last; with catch-up at the cutover (an owner
        // change could take away the apply session's rights on a table).
        let mut last = SchemaObjects::statements(&objects.activation);
        if opts.owners {
            last.extend(access.owners.iter().cloned());
        }
        match opts.follow {
            true => plan.at_cutover = last,
            false => plan.after_load.extend(last),
        }
        plan.warnings.extend(objects.not_carried.iter().map(|n| format!("not carried: {n}")));
        for (t, spec) in &embedded {
            if let Some(chunks) = ChunkTable::of(t, spec).filter(|c| c.application().is_some()) {
                plan.warnings.push(format!(
                    "not copied: the rows of {}.{} on the source (the old vectors): pgshift makes its rows from {}'s {}, one per chunk",
                    chunks.schema_and_name().0,
                    chunks.schema_and_name().1,
                    t.display_name(),
                    spec.text
                ));
            }
        }
        plan.warnings.extend(objects.warnings.iter().cloned());
        if let Some(setup) = &opts.embedding {
            let tokens = crate::embed::tokens_of(&*setup.embedder);
            for (t, spec) in &embedded {
                plan.warnings.extend(crate::embed::window_warning(&src, t, spec, &tokens).await?);
            }
        }
        // Only a source that has large objects carries them: syncing removes those the
        // source lacks, which on a shared target may be another source's.
        plan.large_objects = (large_objects > 0).then_some(Carry { owners: opts.owners, privileges: opts.privileges });
        if opts.follow {
            plan.warnings.extend(crate::catchup::ddl::unfollowable(&src).await?);
        }
        if large_objects > 0 && opts.follow {
            plan.warnings.push(format!(
                "{large_objects} large object(s): logical decoding does not carry them; they are copied after the tables and brought up to date \
                 inside the cutover's write pause, which grows with their size"
            ));
        }
        let embedded_targets: Vec<(&Table, &EmbeddingSpec)> = embedded.iter().map(|(t, s)| (view.same_tables(&[t])[0], *s)).collect();
        if !embedded_targets.is_empty() && !view.extensions.iter().any(|e| e.name == "vector") {
            plan.pre_data.push(pgshift_postgres::ddl::create_extension_sql("vector", &vector_schema));
        }
        plan.pre_data.extend(embedded_targets.iter().map(|(t, s)| match ChunkTable::of(t, s) {
            Some(chunks) => chunks.create_sql(&vector_schema),
            None => embed_copy::vector_column_ddl(t, s, &vector_schema),
        }));
        plan.post_data = ddl::post_data(&target_tables);
        plan.post_data.extend(embedded_targets.iter().filter_map(|(t, s)| ChunkTable::of(t, s)).flat_map(|c| c.post_data()));
        // An index the source has on a column whose vectors are recomputed (in the
        // table, or in the application's chunk table) is built once, on the new
        // vectors, with the spec's settings and the source's name.
        let vectors_in: Vec<(String, String, &EmbeddingSpec)> = embedded_targets
            .iter()
            .map(|(t, s)| match ChunkTable::of(t, s) {
                Some(chunks) => {
                    let (schema, name) = chunks.schema_and_name();
                    (schema.to_string(), name.to_string(), *s)
                }
                None => (t.schema.clone(), t.name.clone(), *s),
            })
            .collect();
        let mut replaced: Vec<(String, String, String)> = Vec::new();
        plan.post_data.retain(|step| {
            let hit = vectors_in.iter().find(|(schema, name, s)| {
                step.kind == ddl::PostDataKind::Index && step.schema == *schema && step.relname == *name && indexes_column(&step.sql, &s.column)
            });
            if let Some((schema, name, _)) = hit {
                replaced.push((schema.clone(), name.clone(), step.object.clone()));
            }
            hit.is_none()
        });
        plan.vector_indexes = vectors_in
            .into_iter()
            .map(|(schema, name, s)| {
                let index = replaced.iter().find(|(sc, n, _)| *sc == schema && *n == name).map(|r| r.2.clone());
                (schema, name, s.clone(), index)
            })
            .collect();
        if opts.follow {
            plan.catchup_ddl = embedded_targets
                .iter()
                .flat_map(|(t, s)| ChunkTable::of(t, s).map_or_else(|| catchup_ddl(t, s), |c| c.catchup_ddl()))
                .collect();
            // A vector column recomputed in place: catch-up keeps the target's vectors
            // and leaves the source's out (every table that holds rows, partitions too).
            for t in tables.iter().filter(|t| t.holds_rows()) {
                if let Some(spec) = specs.get(&t.display_name()).filter(|s| t.columns.iter().any(|c| c.name == s.column)) {
                    plan.left_out.entry(opts.schema_map.target_display(&t.display_name())).or_default().push(spec.column.clone());
                }
            }
        }
        // An application's chunk table keeps the target's sequences: its rows are pgshift's.
        plan.sequence_values = ddl::sequence_values(&view, &copied_targets);
        plan.embeddings = embedded.iter().map(|(_, s)| (*s).clone()).collect();
        plan.extensions = view.extensions.iter().map(|e| (e.name.clone(), e.schema.clone())).collect();
        if !specs.is_empty() && !plan.extensions.iter().any(|(n, _)| n == "vector") {
            plan.extensions.push(("vector".into(), vector_schema.clone()));
        }
        if needs_slot {
            let left_out = |t: &Table| plan.left_out.get(&opts.schema_map.target_display(&t.display_name())).cloned().unwrap_or_default();
            // Small tables without a key are not published: the cutover copies them in its pause.
            plan.publication_tables = plan
                .tables
                .iter()
                .filter(|t| !preflight::copied_in_the_fence(&t.source))
                .map(|t| slot::publication_entry(&t.source, &left_out(&t.source), catalog.server_version_num))
                .collect();
            plan.publication = Some(slot::publication_sql("<slot name>", &plan.publication_tables));
        }
        if opts.follow {
            for t in plan.tables.iter().filter(|t| preflight::copied_in_the_fence(&t.source)) {
                plan.warnings.push(format!(
                    "{} has no primary key or replica identity, so catch-up cannot carry its updates: it is small ({} KiB), and the \
                     cutover copies it again inside its write pause (which grows with it); give it a key on the source to have it followed",
                    t.name,
                    t.size_bytes.max(0) / 1024
                ));
            }
        }
        Ok(plan)
    }

    /// With catch-up: a new slot exports the snapshot and fixes L0. Without: a plain
    /// exported snapshot. A resumed run whose L0 is already recorded reads each chunk
    /// under a fresh snapshot; catch-up from L0 makes the target converge.
    async fn open(&self, dst: &Session, run: Run, plan: &LoadPlan<Table>, follow: bool) -> Result<(Run, Snapshot)> {
        let src_name = self.conn.endpoint();
        let src = self.conn.session().await?;
        if run.start_lsn.is_some() {
            if let Some(slot) = &run.slot_name {
                slot::check(&src, slot).await?;
            }
            return Ok((run, Snapshot::none()));
        }
        if !follow {
            let holder = self.conn.session().await?;
            holder
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .context(&src_name, || "open the snapshot transaction".into())?;
            let name: String = holder.query_one("SELECT pg_export_snapshot()", &[]).await.context(&src_name, || "export a snapshot".into())?.get(0);
            return Ok((run, Snapshot::held(name, move || async move { drop(holder) })));
        }
        let slot_name = run.slot_name.clone().expect("runs that follow get a slot name when created");
        // Before the slot: schema changes from its first position on are reported.
        if let Some(reason) = crate::catchup::ddl::install(&src).await? {
            tracing::warn!("{reason}");
        }
        let (conn, created) = slot::create_with_snapshot(&self.conn, &src, &slot_name, &plan.publication_tables).await?;
        let store = Store::new(dst);
        store.set_start_lsn(run.run_id, &created.consistent_point).await?;
        let run = store.run(run.run_id).await?;
        Ok((run, Snapshot::held(created.snapshot_name, move || conn.close())))
    }

    fn copy_out(&self, table: &TableLoad<Table>, predicate: Option<&str>) -> Option<String> {
        Some(copy_out_statement(table, predicate))
    }

    /// Large objects, made the same as the source's (again on a resumed load: only
    /// what differs is written).
    async fn finish_load(&self, dst: &Session, plan: &LoadPlan<Table>) -> Result<Vec<String>> {
        let src = self.conn.session().await?;
        let mut notes = Vec::new();
        if let Some(carry) = plan.large_objects {
            let synced = large_objects::sync(&src, dst, carry).await?;
            if synced.copied + synced.removed > 0 {
                notes.push(format!("large objects: {} copied ({} bytes), {} removed", synced.copied, synced.bytes, synced.removed));
            }
        }
        let config = super::extension_config::of_source(&src).await?;
        notes.extend(super::extension_config::carry(&src, dst, &config).await?);
        Ok(notes)
    }

    /// Chunks read under fresh snapshots (a resumed run) may hold rows newer than L0:
    /// catch-up applies idempotently until it passes the position recorded here.
    async fn after_copy(&self, dst: &Session, run: &Run, shared_snapshot: bool, follow: bool) -> Result<()> {
        if shared_snapshot || !follow {
            return Ok(());
        }
        let src_name = self.conn.endpoint();
        let src = self.conn.session().await?;
        let lsn: String = src
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .context(&src_name, || "read the source's WAL position".into())?
            .get(0);
        Store::new(dst).set_converge_lsn(run.run_id, &lsn).await
    }
}

impl ChunkReader for PostgresSource {
    type Table = Table;
    type Reader = Session;

    async fn reader(&self) -> Result<Session> {
        Ok(self.conn.session().await?)
    }

    async fn read_chunk(&self, src: &mut Session, snapshot: Option<&str>, table: &TableLoad<Table>, predicate: Option<&str>, out: mpsc::Sender<Bytes>) -> Result<()> {
        read_copy_out(src, snapshot, &table.name, &copy_out_statement(table, predicate), out).await
    }
}

/// Whether `t` is the chunk table of `chunks`.
fn chunk_table_is(chunks: &ChunkTable<'_>, t: &Table) -> bool {
    chunks.schema_and_name() == (t.schema.as_str(), t.name.as_str())
}

/// What a chunk's rows are read with on the source (recorded in the run for workers).
fn copy_out_statement(table: &TableLoad<Table>, predicate: Option<&str>) -> String {
    match &table.embedding {
        Some(spec) => match ChunkTable::of(&table.source, spec) {
            Some(chunks) => chunks.copy_out_sql(&table.source, table.chunk_table.as_ref().expect("chunked tables record their chunk table"), predicate),
            None => embed_copy::copy_out_sql(&table.source, spec, predicate),
        },
        None => copy_out_sql(&table.source, predicate, table.format),
    }
}

/// A PostgreSQL source as `pgshift worker` reads it: each chunk with the statement
/// the run recorded (the table's `source` is that statement).
pub struct RecordedStatements {
    pub conn: ConnInfo,
}

impl ChunkReader for RecordedStatements {
    type Table = String;
    type Reader = Session;

    async fn reader(&self) -> Result<Session> {
        Ok(self.conn.session().await?)
    }

    async fn read_chunk(&self, src: &mut Session, snapshot: Option<&str>, table: &TableLoad<String>, _predicate: Option<&str>, out: mpsc::Sender<Bytes>) -> Result<()> {
        read_copy_out(src, snapshot, &table.name, &table.source, out).await
    }
}

/// Streams `copy_out` into `out` in a read-only transaction, under `snapshot` when given.
async fn read_copy_out(src: &Session, snapshot: Option<&str>, table: &str, copy_out: &str, out: mpsc::Sender<Bytes>) -> Result<()> {
    let src_name = src.endpoint();
    let mut begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string();
    if let Some(s) = snapshot {
        begin.push_str(&format!("; SET TRANSACTION SNAPSHOT {}", quote_literal(s)));
    }
    if let Err(e) = src.batch_execute(&begin).await {
        let _ = src.batch_execute("ROLLBACK").await;
        if snapshot.is_some() && e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE) {
            return Err(Error::SnapshotGone { table: table.to_string(), endpoint: src_name.to_string() });
        }
        return Err(pgshift_postgres::error::query_error(&e, &src_name, format!("open snapshot for {table}")).into());
    }
    if !copy_out_batched(src, copy_out, &out).await? {
        return Ok(());
    }
    src.batch_execute("COMMIT").await.context(&src_name, || "end snapshot transaction".into())?;
    Ok(())
}

/// The source's `public` schema is carried (owner, privileges, comment) only where the
/// target's differs: a target whose `public` is already as the source's gets no
/// statement on it (so a role that may not change `public` can still migrate such a
/// database).
async fn leave_public_as_it_is(src: &Session, dst: &Session, objects: &mut SchemaObjects) -> Result<()> {
    let (Some((src_owner, src_acl, src_comment)), Some((dst_owner, dst_acl, dst_comment))) = (public_schema(src).await?, public_schema(dst).await?) else {
        return Ok(());
    };
    if src_owner == dst_owner {
        objects.access.owners.retain(|s| !s.starts_with("ALTER SCHEMA public OWNER TO "));
    }
    if src_owner == dst_owner && src_acl == dst_acl {
        objects.access.grants.retain(|s| !s.contains(" ON SCHEMA public "));
    }
    if src_comment == dst_comment {
        objects.before_types.retain(|o| !(o.kind == ObjectKind::Schema && o.name == "public"));
    }
    Ok(())
}

/// The `public` schema's owner, privileges and comment, if the database has one.
async fn public_schema(s: &Session) -> Result<Option<(String, Option<String>, Option<String>)>> {
    let sql = "SELECT pg_get_userbyid(nspowner)::text, nspacl::text, obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'public'";
    let row = s.query_opt(sql, &[]).await.context(&s.endpoint(), || "read the public schema".into())?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// The routines, views, triggers, row security and the rest of the schema that go
/// with `tables`; under a schema map, their statements rewritten for the target.
async fn schema_objects(
    src: &Session,
    dst: &Session,
    catalog: &Catalog,
    tables: &[&Table],
    schema_map: &pgshift_postgres::schema_map::SchemaMap,
) -> Result<SchemaObjects> {
    let dst_name = dst.endpoint();
    let mut languages: BTreeSet<String> = dst
        .query("SELECT lanname::text FROM pg_language", &[])
        .await
        .context(&dst_name, || "list the target's languages".into())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Languages that come as extensions (plpython3u, plperl) are created with them.
    languages.extend(catalog.extensions.iter().map(|e| e.name.clone()));
    let mut objects = objects::inspect(src, tables, &languages).await?;
    if schema_map.target_schema("public") == "public" {
        leave_public_as_it_is(src, dst, &mut objects).await?;
    }
    if schema_map.is_empty() {
        return Ok(objects);
    }
    let rewriter = schema_map.statement_rewriter(catalog);
    for group in [
        &mut objects.before_types,
        &mut objects.routines,
        &mut objects.operators,
        &mut objects.routines_after_tables,
        &mut objects.views,
        &mut objects.statistics,
        &mut objects.comments,
        &mut objects.policies,
        &mut objects.activation,
    ] {
        for object in group.iter_mut() {
            // A routine's body is text: the qualified names in it move, but not names
            // it builds at run time or finds through a search_path it sets.
            if matches!(object.kind, ObjectKind::Function | ObjectKind::Procedure) {
                let body = object.statements.first().map(String::as_str).unwrap_or_default();
                let named = rewriter.schemas_named(body);
                if !named.is_empty() || body.contains("search_path") {
                    objects.warnings.push(format!(
                        "{} {}: its body is text{}; pgshift moved the schema-qualified names in it for --map-schema {schema_map}: \
                         check names it builds at run time and the search_path it sets",
                        object.kind,
                        object.name,
                        if named.is_empty() { String::new() } else { format!(" that names schema {}", named.join(", ")) }
                    ));
                }
            }
            object.statements.iter_mut().for_each(|s| *s = rewriter.rewrite(s));
        }
    }
    let access = &mut objects.access;
    for s in access.grants.iter_mut().chain(access.owners.iter_mut()) {
        *s = rewriter.rewrite(s);
    }
    Ok(objects)
}

/// Whether `CREATE ... INDEX ... USING method (column ...)` indexes `column` first.
fn indexes_column(index_sql: &str, column: &str) -> bool {
    let Some(list) = index_sql.split_once(" USING ").and_then(|(_, r)| r.split_once('(')).map(|(_, l)| l) else { return false };
    let first = match list.strip_prefix('"') {
        // A quoted name ends at a quote that is not doubled.
        Some(quoted) => {
            let mut name = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    '"' => break,
                    c => name.push(c),
                }
            }
            name
        }
        None => list.split([' ', ')', ',']).next().unwrap_or_default().to_string(),
    };
    first == column
}

/// The tables a run was started with (`names`: its chunks' tables), looked up in
/// today's source catalog.
fn tables_of_run<'a>(names: &[String], run: &Run, catalog: &'a Catalog) -> Result<Vec<&'a Table>> {
    let mut tables: Vec<&Table> = Vec::new();
    for name in names {
        let t = catalog
            .tables
            .iter()
            .find(|t| &t.display_name() == name)
            .ok_or_else(|| Error::RunState(format!("run {} copies table {name}, which is no longer in the source", run.run_id)))?;
        if !tables.iter().any(|x| x.oid == t.oid) {
            tables.push(t);
        }
    }
    // Partitioned parents hold no chunks but own keys and indexes.
    Ok(with_partition_parents(catalog, tables))
}

#[cfg(test)]
mod tests {
    use super::indexes_column;

    #[test]
    fn an_index_is_on_a_column_when_it_leads_the_list() {
        assert!(indexes_column("CREATE INDEX d ON public.docs USING hnsw (embedding vector_cosine_ops)", "embedding"));
        assert!(indexes_column(r#"CREATE INDEX d ON public.docs USING btree ("Embedding Col")"#, "Embedding Col"));
        assert!(!indexes_column("CREATE INDEX d ON public.docs USING btree (title, embedding)", "embedding"));
        assert!(!indexes_column("CREATE INDEX d ON public.docs USING btree (embedding_v2)", "embedding"));
    }
}
