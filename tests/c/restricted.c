/*
 * A libsanlock user that restricts its registered connection, as libvirt
 * does before it execs qemu, written from the public headers only.
 *
 * usage: restricted all RESOURCE
 *   register, restrict(SANLK_RESTRICT_ALL), then try what a compromised
 *   process would: acquire RESOURCE, lift the restriction, inquire. Each
 *   result is printed as soon as it is known.
 * usage: restricted hold FLAGS RESOURCE
 *   register, acquire RESOURCE, restrict(FLAGS), print "held" and wait to
 *   be killed (the test looks at which signal did it).
 */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sanlock.h>
#include <sanlock_resource.h>

static struct sanlk_resource *parse(const char *s)
{
	struct sanlk_resource *res = NULL;

	if (sanlock_str_to_res((char *)s, &res)) {
		fprintf(stderr, "bad resource %s\n", s);
		exit(2);
	}
	return res;
}

int main(int argc, char **argv)
{
	struct sanlk_resource *args[1];
	char *state = NULL;
	int sock, rv, count = 0;

	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 3 && !strcmp(argv[1], "all")) {
		args[0] = parse(argv[2]);
		sock = sanlock_register();
		printf("register %s\n", sock >= 0 ? "ok" : "failed");
		if (sock < 0)
			return 1;
		printf("restrict %d\n", sanlock_restrict(sock, SANLK_RESTRICT_ALL));
		rv = sanlock_acquire(sock, -1, 0, 1, args, NULL);
		printf("acquire %d\n", rv);
		rv = sanlock_restrict(sock, 0);
		printf("unrestrict %d\n", rv);
		rv = sanlock_acquire(sock, -1, 0, 1, args, NULL);
		printf("acquire after unrestrict %d\n", rv);
		rv = sanlock_inquire(sock, -1, 0, &count, &state);
		printf("inquire %d count %d\n", rv, count);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "hold")) {
		args[0] = parse(argv[3]);
		sock = sanlock_register();
		if (sock < 0) {
			printf("register %d\n", sock);
			return 1;
		}
		rv = sanlock_acquire(sock, -1, 0, 1, args, NULL);
		if (rv) {
			printf("acquire %d\n", rv);
			return 1;
		}
		rv = sanlock_restrict(sock, (uint32_t)strtoul(argv[2], NULL, 0));
		if (rv) {
			printf("restrict %d\n", rv);
			return 1;
		}
		printf("held\n");
		for (;;)
			pause();
	}
	fprintf(stderr, "usage: %s all RESOURCE | hold FLAGS RESOURCE\n", argv[0]);
	return 2;
}
