/*
 * Scratch directories of the local stack: removal of a whole tree without
 * running a shell, used by the PostgreSQL cluster and the stack itself.
 */
#ifndef SHOAL_STACK_WORKDIR_H
#define SHOAL_STACK_WORKDIR_H

/* Removes path and everything below it, never following symbolic links or
 * crossing mount points. Best effort: removes what it can and returns 0 only
 * when nothing is left. */
int shoal_workdir_remove(const char *path);

#endif
