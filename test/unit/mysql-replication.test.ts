// Replication per dialect: CHANGE MASTER (MariaDB) vs CHANGE REPLICATION SOURCE
// (MySQL 8), status parsing of both dialects' SHOW ... STATUS\G, the "what is
// wrong" decision, GTID waits, and no password in any argv.
import { afterAll, describe, expect, test } from 'bun:test';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ACCOUNTS_FACT } from '../../roles/lib/mysql-accounts.ts';
import { LIVE_VARIABLES_FACT } from '../../roles/lib/mysql-config.ts';
import {
  SYSBENCH_OPTIONS_PATH, SYSBENCH_TABLES_FACT, sakilaFact, sakilaLoadScript, sysbenchCommand, sysbenchOptions, sysbenchPrepareScript, waitForScript,
} from '../../roles/lib/mysql-meta.ts';
import {
  catchUpScript, changeSourceSql, gtidWaitSql, parseReplicaStatus, REPLICA_STATUS_FACT, replicaDecision, sourcePositionSql, startReplicaSql,
  type ReplicaSource,
} from '../../roles/lib/mysql-replication.ts';
import { replicationRole } from '../../roles/replication.ts';
import { cluster, ctxFor, host } from './mysql-fixtures.ts';

const SRC: ReplicaSource = { host: host('manager').privateAddress, port: 3306, user: 'rampart_repl' };
const PW = 'S3cret-Pw_xyz';

// Sample outputs, shaped as the servers print them (trimmed to the fields plus a few neighbours).
const MARIADB_OK = `*************************** 1. row ***************************
                Slave_IO_State: Waiting for master to send event
                   Master_Host: ${SRC.host}
                   Master_User: rampart_repl
                   Master_Port: 3306
                 Connect_Retry: 60
              Slave_IO_Running: Yes
             Slave_SQL_Running: Yes
                    Last_Errno: 0
                 Last_IO_Errno: 0
                 Last_IO_Error: 
                Last_SQL_Errno: 0
                Last_SQL_Error: 
              Master_Server_Id: 1203110431
                    Using_Gtid: Slave_Pos
                   Gtid_IO_Pos: 0-1203110431-135
            Master_SSL_Allowed: Yes
               Master_SSL_CA_File: /etc/mysql/rampart-tls/ca.pem
 Master_SSL_Verify_Server_Cert: Yes
`;
const MYSQL_OK = `*************************** 1. row ***************************
             Replica_IO_State: Waiting for source to send event
                  Source_Host: ${SRC.host}
                  Source_User: rampart_repl
                  Source_Port: 3306
           Replica_IO_Running: Yes
          Replica_SQL_Running: Yes
                Last_IO_Errno: 0
                Last_IO_Error: 
               Last_SQL_Errno: 0
               Last_SQL_Error: 
           Retrieved_Gtid_Set: 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5
            Executed_Gtid_Set: 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5
                Auto_Position: 1
           Source_SSL_Allowed: Yes
           Source_SSL_CA_File: /etc/mysql/rampart-tls/ca.pem
Source_SSL_Verify_Server_Cert: Yes
`;

describe('status parsing', () => {
  test('MariaDB SHOW SLAVE STATUS (old column names, Using_Gtid)', () => {
    expect(parseReplicaStatus(MARIADB_OK)).toEqual({
      sourceHost: SRC.host, sourcePort: 3306, sourceUser: 'rampart_repl', ioRunning: 'Yes', sqlRunning: 'Yes', gtid: true,
      ioErrno: 0, ioError: '', sqlErrno: 0, sqlError: '', retryCount: null, ssl: true,
    });
  });

  test('MySQL 8 SHOW REPLICA STATUS (Source_/Replica_ names, Auto_Position)', () => {
    const s = parseReplicaStatus(MYSQL_OK)!;
    expect([s.sourceHost, s.sourcePort, s.sourceUser, s.ioRunning, s.sqlRunning, s.gtid]).toEqual([SRC.host, 3306, 'rampart_repl', 'Yes', 'Yes', true]);
  });

  test('an empty result means "not a replica"', () => {
    expect(parseReplicaStatus('')).toBeNull();
  });
});

describe('what is wrong, and the least that repairs it', () => {
  const dec = (text: string) => replicaDecision(parseReplicaStatus(text), SRC);

  test('healthy replicas of both dialects are ok', () => {
    expect(dec(MARIADB_OK)).toEqual({ action: 'ok' });
    expect(dec(MYSQL_OK)).toEqual({ action: 'ok' });
  });

  test('not configured -> configure', () => {
    expect(dec('').action).toBe('configure');
  });

  test('stopped (STOP SLAVE / STOP REPLICA) -> start, not re-point', () => {
    expect(dec(MARIADB_OK.replace(/Slave_IO_Running: Yes/, 'Slave_IO_Running: No').replace(/Slave_SQL_Running: Yes/, 'Slave_SQL_Running: No')))
      .toEqual({ action: 'start', reason: 'replica threads IO=No SQL=No' });
    expect(dec(MYSQL_OK.replace('Replica_SQL_Running: Yes', 'Replica_SQL_Running: No')).action).toBe('start');
  });

  test('pointing elsewhere (host, port or user) -> configure', () => {
    expect(dec(MARIADB_OK.replace(`Master_Host: ${SRC.host}`, 'Master_Host: 10.9.9.9'))).toMatchObject({ action: 'configure', reason: expect.stringContaining('10.9.9.9') });
    expect(dec(MYSQL_OK.replace('Source_Port: 3306', 'Source_Port: 3307')).action).toBe('configure');
    expect(dec(MYSQL_OK.replace('Source_User: rampart_repl', 'Source_User: root')).action).toBe('configure');
  });

  test('a MySQL replica that gives up after a few reconnects (8.4 default: 10) -> configure; MariaDB shows no count', () => {
    const want = { ...SRC, retryCount: 86400 };
    const few = MYSQL_OK.replace('Auto_Position: 1', 'Auto_Position: 1\n           Source_Retry_Count: 10');
    expect(replicaDecision(parseReplicaStatus(few), want)).toMatchObject({ action: 'configure', reason: expect.stringContaining('10 reconnect attempts') });
    expect(replicaDecision(parseReplicaStatus(few.replace('Source_Retry_Count: 10', 'Source_Retry_Count: 86400')), want)).toEqual({ action: 'ok' });
    expect(replicaDecision(parseReplicaStatus(MARIADB_OK), want)).toEqual({ action: 'ok' });
  });

  test('file/position instead of GTID -> configure', () => {
    expect(dec(MARIADB_OK.replace('Using_Gtid: Slave_Pos', 'Using_Gtid: No'))).toEqual({ action: 'configure', reason: 'not using GTID positioning' });
    expect(dec(MYSQL_OK.replace('Auto_Position: 1', 'Auto_Position: 0')).action).toBe('configure');
  });

  test('IO thread failing to connect / authenticate -> configure (fresh credentials)', () => {
    const text = MARIADB_OK.replace('Slave_IO_Running: Yes', 'Slave_IO_Running: Connecting').replace('Last_IO_Errno: 0', 'Last_IO_Errno: 1045')
      .replace('Last_IO_Error: ', "Last_IO_Error: error connecting to master 'rampart_repl@10.77.0.13:3306' - retry-time: 60");
    expect(dec(text)).toMatchObject({ action: 'configure', reason: expect.stringContaining('1045') });
  });

  test('SQL thread error (diverged data) and purged binlogs (1236) are not papered over', () => {
    const sqlErr = MARIADB_OK.replace('Slave_SQL_Running: Yes', 'Slave_SQL_Running: No').replace('Last_SQL_Errno: 0', 'Last_SQL_Errno: 1062')
      .replace('Last_SQL_Error: ', "Last_SQL_Error: Duplicate entry '1' for key 'PRIMARY'");
    expect(dec(sqlErr)).toMatchObject({ action: 'fail', reason: expect.stringContaining('1062') });
    const purged = MYSQL_OK.replace('Replica_IO_Running: Yes', 'Replica_IO_Running: No').replace('Last_IO_Errno: 0', 'Last_IO_Errno: 1236')
      .replace('Last_IO_Error: ', 'Last_IO_Error: Got fatal error 1236 from source when reading data from binary log');
    expect(dec(purged)).toMatchObject({ action: 'fail', hint: expect.stringContaining('mysqldump --single-transaction --gtid') });
  });

  test('replication without TLS, or without verifying the manager, -> configure with SSL options', () => {
    const src = { ...SRC, ca: '/etc/mysql/rampart-tls/ca.pem' };
    const plain = MARIADB_OK.replace('Master_SSL_Allowed: Yes', 'Master_SSL_Allowed: No');
    const unverified = MARIADB_OK.replace('Master_SSL_Verify_Server_Cert: Yes', 'Master_SSL_Verify_Server_Cert: No');
    for (const out of [plain, unverified]) expect(replicaDecision(parseReplicaStatus(out), src)).toMatchObject({ action: 'configure', reason: expect.stringContaining('TLS') });
    expect(replicaDecision(parseReplicaStatus(MARIADB_OK), src)).toMatchObject({ action: 'ok' });
    expect(changeSourceSql('mariadb', src, PW)).toContain(`MASTER_SSL=1, MASTER_SSL_CA='${src.ca}', MASTER_SSL_VERIFY_SERVER_CERT=1`);
    expect(changeSourceSql('mysql', src, PW)).toContain(`SOURCE_SSL=1, SOURCE_SSL_CA='${src.ca}', SOURCE_SSL_VERIFY_SERVER_CERT=1`);
    // the catch-up query over the network verifies the manager too
    expect(catchUpScript('mariadb', src)).toContain(`ssl-ca=${src.ca}\\nssl-verify-server-cert`);
    expect(catchUpScript('mysql', src)).toContain(`ssl-ca=${src.ca}\\nssl-mode=VERIFY_IDENTITY`);
  });

  test('the role check uses the facts only and carries the decision to apply', () => {
    const t = replicationRole.tasks[0];
    expect(t.check(ctxFor('worker1', { os: 'debian', status: MARIADB_OK }))).toBeNull();
    const d = t.check(ctxFor('worker1', { os: 'ubuntu', status: MYSQL_OK.replace('Replica_IO_Running: Yes', 'Replica_IO_Running: No') })) as { message: string; data: { action: string } };
    expect(d.data.action).toBe('start');
    expect(t.when!(ctxFor('manager', {}))).toMatch(/source/);
    expect(t.when!(ctxFor('gatekeeper', {}))).toMatch(/not a DB node/);
  });
});

describe('statements per dialect', () => {
  test('MariaDB: CHANGE MASTER ... MASTER_USE_GTID=slave_pos; START SLAVE', () => {
    const s = changeSourceSql('mariadb', SRC, PW);
    expect(s).toBe(`STOP SLAVE;\nCHANGE MASTER TO MASTER_HOST='${SRC.host}', MASTER_PORT=3306, MASTER_USER='rampart_repl', MASTER_PASSWORD='${PW}', MASTER_CONNECT_RETRY=5, MASTER_USE_GTID=slave_pos;\nSTART SLAVE;\n`);
    expect(s).not.toContain('SOURCE');
    expect(startReplicaSql('mariadb')).toBe('START SLAVE;\n');
  });

  test('MySQL 8: CHANGE REPLICATION SOURCE TO ... SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1; START REPLICA', () => {
    const s = changeSourceSql('mysql', SRC, PW);
    expect(s).toBe(`STOP REPLICA;\nCHANGE REPLICATION SOURCE TO SOURCE_HOST='${SRC.host}', SOURCE_PORT=3306, SOURCE_USER='rampart_repl', SOURCE_PASSWORD='${PW}', SOURCE_CONNECT_RETRY=5, SOURCE_RETRY_COUNT=86400, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1;\nSTART REPLICA;\n`);
    expect(s).not.toContain('MASTER');
    expect(startReplicaSql('mysql')).toBe('START REPLICA;\n');
  });

  test('GTID waits: MASTER_GTID_WAIT on gtid_binlog_pos vs WAIT_FOR_EXECUTED_GTID_SET on gtid_executed', () => {
    expect(gtidWaitSql('mariadb', '0-1-5', 60)).toBe("SELECT MASTER_GTID_WAIT('0-1-5', 60)");
    expect(gtidWaitSql('mysql', 'uuid:1-5', 60)).toBe("SELECT WAIT_FOR_EXECUTED_GTID_SET('uuid:1-5', 60)");
    expect(sourcePositionSql('mariadb')).toContain('gtid_binlog_pos');
    expect(sourcePositionSql('mysql')).toContain('gtid_executed');
    expect(catchUpScript('mariadb', SRC)).toContain('MASTER_GTID_WAIT');
    expect(catchUpScript('mysql', SRC)).toContain('WAIT_FOR_EXECUTED_GTID_SET');
    expect(catchUpScript('mysql', SRC)).toContain('--get-server-public-key');
    expect(catchUpScript('mariadb', SRC)).not.toMatch(/\bsleep\b/);
  });
});

describe('no password in any argv', () => {
  // Every script the roles hand to conn.exec becomes the argv of `bash -c`: none may hold a secret.
  const scripts = [
    REPLICA_STATUS_FACT, ACCOUNTS_FACT, LIVE_VARIABLES_FACT, SYSBENCH_TABLES_FACT, sakilaFact('sakila'),
    catchUpScript('mariadb', SRC), catchUpScript('mysql', SRC),
    sakilaLoadScript('/tmp/x.tar.gz', cluster.database.sakila.sha256, 'sakila'),
    sysbenchPrepareScript(cluster.database.sysbench), sysbenchCommand(cluster.database.sysbench, 'oltp_read_only', 'run'),
    waitForScript('x', 'SELECT 1', '1', 5),
  ];

  test('scripts never contain the password; the password reaches mysql/sysbench only through stdin text or a 0600 file', () => {
    for (const s of scripts) expect(s).not.toContain(PW);
    expect(changeSourceSql('mariadb', SRC, PW)).toContain(PW); // fed to `mysql` on stdin
    expect(sysbenchOptions(cluster.database.sysbench, PW)).toContain(`mysql-password=${PW}`); // written 0600 via stdin
    expect(sysbenchCommand(cluster.database.sysbench, 'oltp_read_write', 'run')).toContain(`--config-file=${SYSBENCH_OPTIONS_PATH}`);
  });

  test('the catch-up script reads the password from stdin into an option file on a pipe (bash builtins only)', () => {
    const s = catchUpScript('mariadb', SRC);
    expect(s).toContain('IFS= read -r pw');
    expect(s).toContain('--defaults-extra-file=<(opts)');
    expect(s).not.toMatch(/-p\s*"?\$pw|--password/);
  });
});

describe('waitForScript: a worker waits while replication moves, not for a fixed time', () => {
  // a fake `mysql` on PATH: the marker query prints ./done, SHOW REPLICA STATUS prints ./pos (as \G lines)
  const bin = mkdtempSync(join(tmpdir(), 'rampart-wait-'));
  writeFileSync(join(bin, 'mysql'), `#!/bin/sh
case "$*" in
  *"SHOW REPLICA STATUS"*) printf '      Relay_Log_Pos: %s\\n Exec_Master_Log_Pos: %s\\n' "$(cat ${bin}/pos)" "$(cat ${bin}/pos)";;
  *) cat ${bin}/done 2>/dev/null;;
esac
`, { mode: 0o755 });
  afterAll(() => rmSync(bin, { recursive: true, force: true }));
  const wait = (stallS: number, capS?: number) => spawn('bash', ['-c', waitForScript('the sakila load', 'SELECT v FROM m', 'ok', stallS, capS)], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
  const exit = (p: ReturnType<typeof spawn>) => new Promise<{ code: number; stderr: string; ms: number }>((resolve) => {
    const t0 = Date.now();
    let stderr = '';
    p.stderr!.on('data', (b: Buffer) => (stderr += b));
    p.once('exit', (code) => resolve({ code: code ?? -1, stderr, ms: Date.now() - t0 }));
  });

  test('replication moving for longer than the stall limit: it keeps waiting and succeeds once the marker is there', async () => {
    rmSync(join(bin, 'done'), { force: true });
    writeFileSync(join(bin, 'pos'), '0');
    const done = exit(wait(2));
    for (let i = 1; i <= 14; i++) {
      await Bun.sleep(300);
      writeFileSync(join(bin, 'pos'), String(i * 1000));
    }
    writeFileSync(join(bin, 'done'), 'ok\n');
    const r = await done;
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.ms).toBeGreaterThan(4000); // twice the stall limit: a fixed 2 s timeout would have failed
  });

  test('no progress: it gives up after the stall limit and says why', async () => {
    rmSync(join(bin, 'done'), { force: true });
    writeFileSync(join(bin, 'pos'), '7');
    const r = await exit(wait(1));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the sakila load did not arrive from the manager: replication made no progress for 1 s');
    expect(r.ms).toBeLessThan(4000);
  });

  test('moving but never done: the cap ends it', async () => {
    rmSync(join(bin, 'done'), { force: true });
    let i = 0;
    const mover = setInterval(() => writeFileSync(join(bin, 'pos'), String(++i)), 200);
    try {
      const r = await exit(wait(2, 2));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('did not arrive from the manager within 2 s');
    } finally {
      clearInterval(mover);
    }
  });
});
