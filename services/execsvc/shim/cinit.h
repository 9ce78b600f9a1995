/* The common-case container init in C (cinit.c), called by skiff-shim's cloned child. */
#ifndef SKIFF_CINIT_H
#define SKIFF_CINIT_H

/* With <bundle>/init.conf: sets the container up and execs its command, or reports a failure
 * on the sync pipe (fd 3) and exits; never returns. Without it: returns (init.py runs). */
void cinit_run(const char *bundle);

#endif
