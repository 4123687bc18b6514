/*
 * chdb-server: run the ClickHouse engine shipped in chdb's libchdb.so (which is clickhouse-local)
 * as a long-lived server process, for local tests and the demo (see scripts/services.sh).
 *
 * Usage: chdb-server /path/to/libchdb.so [clickhouse-local arguments...]
 *
 * The library is loaded with dlopen and its command-line entry point
 *   chdb_result *chdb_query_cmdline(int argc, char **argv);
 * is called with the remaining arguments, exactly as clickhouse-local would receive them but
 * without a program name (clickhouse-local rejects one: "Positional option 'clickhouse' is not
 * supported"). services.sh passes --listen_host/--http_port/--tcp_port and a --query that starts
 * the listeners and then runs forever, so this process is the server: its pid is the server's pid.
 */
#include <dlfcn.h>
#include <stdio.h>

typedef void *(*query_cmdline_fn)(int argc, char **argv);
typedef const char *(*result_error_fn)(void *result);

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s /path/to/libchdb.so [clickhouse-local args...]\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (lib == NULL) {
    fprintf(stderr, "chdb-server: cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  query_cmdline_fn query_cmdline = (query_cmdline_fn)dlsym(lib, "chdb_query_cmdline");
  result_error_fn result_error = (result_error_fn)dlsym(lib, "chdb_result_error");
  if (query_cmdline == NULL) {
    fprintf(stderr, "chdb-server: chdb_query_cmdline not found in %s\n", argv[1]);
    return 2;
  }
  void *result = query_cmdline(argc - 2, argv + 2);
  if (result == NULL) {
    fprintf(stderr, "chdb-server: chdb_query_cmdline returned no result\n");
    return 1;
  }
  const char *error = result_error != NULL ? result_error(result) : NULL;
  if (error != NULL && error[0] != '\0') {
    fprintf(stderr, "chdb-server: %s\n", error);
    return 1;
  }
  /* The forever query ended (for example KILL QUERY): the server stops with it. */
  return 0;
}
