#!/usr/bin/env bash
# Start PostgreSQL 15 and MariaDB 10.11 on 127.0.0.1 for the integration tests; print the URLs to export.
#   eval "$(bash .ci/services.sh)"
# Idempotent: installs only what is missing, starts only what is not running, (re)creates the test role.
# Everything but the final `export` lines goes to stderr so `eval` sees only those.
set -euo pipefail

PG_USER=rag_test
PG_PASS=rag_test_pw
MY_USER=rag_test
MY_PASS=rag_test_pw
log() { echo "[services] $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_install() {
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 \
    || { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; }
}

wait_for() {  # wait_for <description> <command...>: poll until the command succeeds (max ~30 s)
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$what did not come up"; return 1
}

start_postgres() {
  command -v /usr/lib/postgresql/15/bin/postgres >/dev/null 2>&1 || apt_install postgresql-15 postgresql-client-15
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL 15"
    if command -v pg_ctlcluster >/dev/null; then
      [ -d /etc/postgresql/15/main ] || as_root pg_createcluster 15 main >&2
      as_root pg_ctlcluster 15 main start >&2 || true
    else
      as_root service postgresql start >&2
    fi
    wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
  fi
  as_root su postgres -c "psql -q -v ON_ERROR_STOP=1 -d postgres" >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASS';
  ELSE
    ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASS';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_USER OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_USER')
\gexec
SQL
}

mariadb_up() { mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -u"$MY_USER" -p"$MY_PASS" ping 2>/dev/null | grep -q alive \
  || mysqladmin -uroot ping 2>/dev/null | grep -q alive; }

start_mariadb() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  if ! mariadb_up; then
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root service mariadb start >&2 2>/dev/null || as_root service mysql start >&2 2>/dev/null || {
      (as_root nohup mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &)
    }
    wait_for MariaDB mariadb_up
  fi
  as_root mysql -uroot >&2 <<SQL
CREATE USER IF NOT EXISTS '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$MY_PASS';
CREATE USER IF NOT EXISTS '$MY_USER'@'localhost' IDENTIFIED BY '$MY_PASS';
ALTER USER '$MY_USER'@'127.0.0.1' IDENTIFIED BY '$MY_PASS';
ALTER USER '$MY_USER'@'localhost' IDENTIFIED BY '$MY_PASS';
GRANT ALL PRIVILEGES ON \`rag\\_test%\`.* TO '$MY_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`rag\\_test%\`.* TO '$MY_USER'@'localhost';
CREATE DATABASE IF NOT EXISTS rag_test;
FLUSH PRIVILEGES;
SQL
}

start_postgres
start_mariadb
echo "export RAG_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER:$PG_PASS@127.0.0.1:5432/$PG_USER"
echo "export RAG_TEST_MYSQL_URL=mysql+pymysql://$MY_USER:$MY_PASS@127.0.0.1:3306/rag_test"
