/* The SQLite store's write pattern, timed per commit (scripts/sqlite_journal.sh runs it).
 *
 * Each transaction does what a few registrations (four unless told) do to `registrations`
 * (src/store/sqlite/schema.rs, same partial indexes): insert a pending row with a ~2 KB software statement and
 * ~1.2 KB of metadata, and turn an earlier row active with a (random, upstream-chosen) client_id and its
 * metadata. synchronous=FULL, mmap_size=0, as the proxy opens it.
 * Prints the process's CPU (user + system) and the elapsed time per commit.
 *
 * usage: commit <journal mode> <commits> <database path> [locking mode] [ids] [page size] [layout] [per commit]
 * locking mode: NORMAL (default, as the proxy opens it) or EXCLUSIVE; ids: ordered (default: time-ordered UUID
 * text, as the proxy's UUIDv7 row ids) or random (UUIDv4 text, the proxy's row ids before 2026-12-02); page
 * size: the database's page size in bytes (default 4096, SQLite's and the proxy's); layout: one (default: the
 * SSA and metadata in the registration's row) or split (in a table of their own, written once); per commit:
 * registrations per transaction, 1 to 32 (default 4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sqlite3.h"

static double cpu_seconds(int system_only) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    double sys = r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
    return system_only ? sys : sys + r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void check(sqlite3 *db, int rc, const char *what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 9) {
        fprintf(stderr, "usage: commit <journal mode> <commits> <database path> [locking mode] [ids] [page size] [layout]"
                        " [registrations per commit]\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[3];
    const char *locking = argc > 4 ? argv[4] : "NORMAL";
    int ordered = !(argc > 5 && strcmp(argv[5], "random") == 0);
    int page_size = argc > 6 ? atoi(argv[6]) : 4096;
    int split = argc > 7 && strcmp(argv[7], "split") == 0;
    int per = argc > 8 ? atoi(argv[8]) : 4;
    if (per < 1 || per > 32) {
        fprintf(stderr, "registrations per commit: 1 to 32\n");
        return 2;
    }
    srand(12345);
    int commits = atoi(argv[2]);
    char journal[4096];
    snprintf(journal, sizeof journal, "%s-journal", path);
    unlink(path);
    unlink(journal);

    sqlite3 *db;
    check(db, sqlite3_open(path, &db), "open");
    char pragmas[256];
    /* page_size first: it takes effect only before the (fresh) database's first page is written. */
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA page_size=%d; PRAGMA locking_mode=%s; PRAGMA journal_mode=%s; PRAGMA synchronous=FULL;"
             " PRAGMA mmap_size=0;",
             page_size, locking, mode);
    check(db, sqlite3_exec(db, pragmas, 0, 0, 0), "pragmas");
    if (split)
        check(db, sqlite3_exec(db,
            "CREATE TABLE r (id TEXT PRIMARY KEY, client_id TEXT, profile TEXT, software_id TEXT, state TEXT,"
            "  unique_sw INT, issued_at INT, updated_at INT);"
            "CREATE TABLE d (id TEXT PRIMARY KEY, ssa TEXT, md TEXT);", 0, 0, 0), "schema");
    else
        check(db, sqlite3_exec(db,
            "CREATE TABLE r (id TEXT PRIMARY KEY, client_id TEXT, profile TEXT, software_id TEXT, state TEXT,"
            "  unique_sw INT, ssa TEXT, md TEXT, updated_at INT);", 0, 0, 0), "schema");
    check(db, sqlite3_exec(db, ""
        "CREATE UNIQUE INDEX r_sw ON r (profile, software_id)"
        "  WHERE state IN ('pending', 'active') AND unique_sw = 1;"
        "CREATE UNIQUE INDEX r_client ON r (client_id) WHERE client_id IS NOT NULL AND state <> 'gone';"
        "CREATE INDEX r_pending ON r (updated_at) WHERE state = 'pending';", 0, 0, 0), "schema");

    static char ssa[2001], md[1201];
    memset(ssa, 's', 2000);
    memset(md, 'm', 1200);
    sqlite3_stmt *ins, *ins_d = 0, *upd;
    if (split) {
        check(db, sqlite3_prepare_v2(db,
            "INSERT INTO r VALUES (?1, NULL, 'ob', ?1, 'pending', 1, NULL, ?4)", -1, &ins, 0), "insert");
        check(db, sqlite3_prepare_v2(db, "INSERT INTO d VALUES (?1, ?2, ?3)", -1, &ins_d, 0), "insert");
        check(db, sqlite3_prepare_v2(db,
            "UPDATE r SET state = 'active', client_id = ?4, issued_at = ?3, updated_at = ?3 WHERE id = ?1", -1,
            &upd, 0), "update");
    } else {
        check(db, sqlite3_prepare_v2(db,
            "INSERT INTO r VALUES (?1, NULL, 'ob', ?1, 'pending', 1, ?2, ?3, ?4)", -1, &ins, 0), "insert");
        check(db, sqlite3_prepare_v2(db,
            "UPDATE r SET state = 'active', client_id = ?4, md = ?2, updated_at = ?3 WHERE id = ?1", -1, &upd, 0),
            "update");
    }

    int k = 0;
    static char ids[64][64];
    double cpu0 = cpu_seconds(0), sys0 = cpu_seconds(1), t0 = now();
    for (int t = 0; t < commits; t++) {
        check(db, sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0), "begin");
        for (int i = 0; i < per; i++) {
            char *id = ids[k % 64];
            if (ordered)
                snprintf(id, 64, "%08x-0000-7000-8000-%012x", k, rand());
            else
                snprintf(id, 64, "%08x-%04x-4%03x-8%03x-%06x%06x", rand(), rand() & 0xffff, rand() & 0xfff,
                         rand() & 0xfff, rand() & 0xffffff, rand() & 0xffffff);
            k++;
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(ins, 4, k);
            if (split) {
                sqlite3_bind_text(ins_d, 1, id, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(ins_d, 2, ssa, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins_d, 3, md, -1, SQLITE_STATIC);
                check(db, sqlite3_step(ins_d), "insert");
                sqlite3_reset(ins_d);
            } else {
                sqlite3_bind_text(ins, 2, ssa, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins, 3, md, -1, SQLITE_STATIC);
            }
            check(db, sqlite3_step(ins), "insert");
            sqlite3_reset(ins);
            if (k > per) {
                /* The upstream's client_id: random whatever our row ids are. */
                char client_id[64];
                snprintf(client_id, sizeof client_id, "%08x%08x%08x%08x", rand(), rand(), rand(), rand());
                sqlite3_bind_text(upd, 1, ids[(k - per - 1) % 64], -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(upd, 4, client_id, -1, SQLITE_TRANSIENT);
                if (!split)
                    sqlite3_bind_text(upd, 2, md, -1, SQLITE_STATIC);
                sqlite3_bind_int(upd, 3, k);
                check(db, sqlite3_step(upd), "update");
                sqlite3_reset(upd);
            }
        }
        check(db, sqlite3_exec(db, "COMMIT", 0, 0, 0), "commit");
    }
    double cpu1 = cpu_seconds(0), sys1 = cpu_seconds(1), t1 = now();
    printf("%-9s %-9s %-7s %.1f us CPU/commit (system %.1f), %.1f us/commit, page size %d, %s, %d per commit\n",
           mode, locking, ordered ? "ordered" : "random", 1e6 * (cpu1 - cpu0) / commits,
           1e6 * (sys1 - sys0) / commits, 1e6 * (t1 - t0) / commits, page_size, split ? "split" : "one table", per);
    sqlite3_finalize(ins);
    sqlite3_finalize(ins_d);
    sqlite3_finalize(upd);
    sqlite3_close(db);
    return 0;
}
