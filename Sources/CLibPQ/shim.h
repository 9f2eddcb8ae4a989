#ifndef EVENTLOG_CLIBPQ_SHIM_H
#define EVENTLOG_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
