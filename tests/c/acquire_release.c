/*
 * A libsanlock user, written from the public headers only: registers,
 * acquires the lease given as RESOURCE on the command line, inquires,
 * releases, inquires again, and prints every result. Run against the real
 * sanlock daemon and against hactl's, its output must be the same.
 *
 * usage: acquire_release LS:RES:path:offset
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sanlock.h>
#include <sanlock_resource.h>

int main(int argc, char **argv)
{
	struct sanlk_resource *res = NULL, *args[1];
	struct sanlk_resource **got = NULL;
	char *state = NULL;
	int sock, rv, count = 0, i;

	if (argc != 2) {
		fprintf(stderr, "usage: %s RESOURCE\n", argv[0]);
		return 2;
	}
	rv = sanlock_str_to_res(argv[1], &res);
	printf("str_to_res %d num_disks %u\n", rv, rv ? 0 : res->num_disks);
	if (rv)
		return 1;

	sock = sanlock_register();
	/* the fd number is the process's, not the daemon's: print success only */
	printf("register %s\n", sock >= 0 ? "ok" : "failed");
	if (sock < 0) {
		printf("register rv %d\n", sock);
		return 1;
	}

	args[0] = res;
	rv = sanlock_acquire(sock, -1, 0, 1, args, NULL);
	printf("acquire %d\n", rv);

	/* a second acquire of the same lease by the same process */
	rv = sanlock_acquire(sock, -1, 0, 1, args, NULL);
	printf("acquire again %d\n", rv);

	rv = sanlock_inquire(sock, -1, 0, &count, &state);
	printf("inquire %d count %d state \"%s\"\n", rv, count, state ? state : "");
	if (rv == 0 && state) {
		rv = sanlock_state_to_args(state, &count, &got);
		printf("state_to_args %d count %d\n", rv, count);
		for (i = 0; rv == 0 && i < count; i++) {
			printf("  %.48s:%.48s disks %u lver %llu flags 0x%x\n",
			       got[i]->lockspace_name, got[i]->name,
			       got[i]->num_disks,
			       (unsigned long long)got[i]->lver, got[i]->flags);
			free(got[i]);
		}
		free(got);
	}
	free(state);
	state = NULL;

	rv = sanlock_release(sock, -1, 0, 1, args);
	printf("release %d\n", rv);
	rv = sanlock_release(sock, -1, 0, 1, args);
	printf("release again %d\n", rv);

	count = -1;
	rv = sanlock_inquire(sock, -1, 0, &count, &state);
	printf("inquire %d count %d state %s\n", rv, count, state ? "set" : "none");
	free(state);

	/* acquire for a pid that is not registered, on a new connection */
	rv = sanlock_acquire(-1, 1, 0, 1, args, NULL);
	printf("acquire for pid 1 %d\n", rv);

	close(sock);
	free(res);
	return 0;
}
