/*
 * A stand-in for libnvidia-ml: the NVML entry points kitt reaches through
 * the nvml-wrapper crate, with NVML's C ABI (return codes, the versioned
 * memory struct, init reference counting, UNINITIALIZED before init).
 *
 * Tests compile it with `cc -shared -fPIC` and point KITT_NVML_LIBRARY at
 * the result. The machine it describes comes from environment variables,
 * read at each call; a test that loads it into its own process sets the
 * defaults at compile time instead (-DFAKE_NVML_DEFAULT_COUNT="4" and so
 * on), because a multi-threaded test process must not change its
 * environment.
 *
 * - FAKE_NVML_COUNT: how many devices (default 2);
 * - FAKE_NVML_MEMORY_MIB: each device's memory in MiB (default 24576), or
 *   "not-supported" for a unified-memory device (GB10), whose memory query
 *   answers NVML_ERROR_NOT_SUPPORTED;
 * - FAKE_NVML_USED_MIB: memory in use; device i reports (i + 1) times this
 *   (default 0), so sums over different devices differ;
 * - FAKE_NVML_NAME: the model name (default "Fake NVML GPU");
 * - FAKE_NVML_INIT: "fail" makes nvmlInit_v2 answer DRIVER_NOT_LOADED;
 * - FAKE_NVML_LOG: a file each call's function name is appended to.
 *
 * UUIDs are GPU-8a3f000<i>-1111-2222-3333-444444444444.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

#ifndef FAKE_NVML_DEFAULT_COUNT
#define FAKE_NVML_DEFAULT_COUNT "2"
#endif
#ifndef FAKE_NVML_DEFAULT_MEMORY_MIB
#define FAKE_NVML_DEFAULT_MEMORY_MIB "24576"
#endif
#ifndef FAKE_NVML_DEFAULT_USED_MIB
#define FAKE_NVML_DEFAULT_USED_MIB "0"
#endif
#ifndef FAKE_NVML_DEFAULT_NAME
#define FAKE_NVML_DEFAULT_NAME "Fake NVML GPU"
#endif
#ifndef FAKE_NVML_DEFAULT_INIT
#define FAKE_NVML_DEFAULT_INIT "ok"
#endif

#define MAX_DEVICES 16
#define MIB 1048576ULL

struct nvmlDevice_st {
    unsigned int index;
};
typedef struct nvmlDevice_st *nvmlDevice_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

static struct nvmlDevice_st devices[MAX_DEVICES] = {
    {0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}, {11}, {12}, {13}, {14}, {15},
};

/* nvmlInit_v2 calls not yet matched by nvmlShutdown, as real NVML counts them. */
static int init_count = 0;

static const char *setting(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value != NULL ? value : fallback;
}

static void log_call(const char *function) {
    const char *path = getenv("FAKE_NVML_LOG");
    if (path == NULL) {
        return;
    }
    FILE *out = fopen(path, "a");
    if (out != NULL) {
        fprintf(out, "%s\n", function);
        fclose(out);
    }
}

static unsigned int device_count(void) {
    long count = strtol(setting("FAKE_NVML_COUNT", FAKE_NVML_DEFAULT_COUNT), NULL, 10);
    if (count < 0) {
        return 0;
    }
    return count > MAX_DEVICES ? MAX_DEVICES : (unsigned int)count;
}

static int valid(nvmlDevice_t device) {
    return device != NULL && device >= devices && device < devices + device_count();
}

static nvmlReturn_t copy_text(const char *text, char *out, unsigned int length) {
    if (out == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(text) + 1 > length) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    strcpy(out, text);
    return NVML_SUCCESS;
}

/* Checks that NVML is initialised and, when given, that the handle is one of ours. */
static nvmlReturn_t check(const char *function, nvmlDevice_t device, int needs_device) {
    log_call(function);
    if (__atomic_load_n(&init_count, __ATOMIC_SEQ_CST) <= 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (needs_device && !valid(device)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    log_call("nvmlInit_v2");
    if (strcmp(setting("FAKE_NVML_INIT", FAKE_NVML_DEFAULT_INIT), "fail") == 0) {
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    __atomic_add_fetch(&init_count, 1, __ATOMIC_SEQ_CST);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    log_call("nvmlShutdown");
    if (__atomic_load_n(&init_count, __ATOMIC_SEQ_CST) <= 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    __atomic_sub_fetch(&init_count, 1, __ATOMIC_SEQ_CST);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t ready = check("nvmlSystemGetDriverVersion", NULL, 0);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    return copy_text(setting("FAKE_NVML_DRIVER", "999.88.77"), version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t ready = check("nvmlDeviceGetCount_v2", NULL, 0);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *count = device_count();
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t ready = check("nvmlDeviceGetHandleByIndex_v2", NULL, 0);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    if (device == NULL || index >= device_count()) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    nvmlReturn_t ready = check("nvmlDeviceGetIndex", device, 1);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    if (index == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *index = device->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    nvmlReturn_t ready = check("nvmlDeviceGetName", device, 1);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    return copy_text(setting("FAKE_NVML_NAME", FAKE_NVML_DEFAULT_NAME), name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    nvmlReturn_t ready = check("nvmlDeviceGetUUID", device, 1);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    char text[64];
    snprintf(text, sizeof text, "GPU-%08x-1111-2222-3333-444444444444",
             0x8a3f0000u + device->index);
    return copy_text(text, uuid, length);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    nvmlReturn_t ready = check("nvmlDeviceGetMemoryInfo_v2", device, 1);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    if (memory == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    /* NVML_STRUCT_VERSION(Memory, 2): the struct's size with the version in the top byte. */
    if (memory->version != (unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24))) {
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    }
    const char *total = setting("FAKE_NVML_MEMORY_MIB", FAKE_NVML_DEFAULT_MEMORY_MIB);
    if (strcmp(total, "not-supported") == 0) {
        return NVML_ERROR_NOT_SUPPORTED;
    }
    unsigned long long used_mib =
        strtoull(setting("FAKE_NVML_USED_MIB", FAKE_NVML_DEFAULT_USED_MIB), NULL, 10);
    memory->total = strtoull(total, NULL, 10) * MIB;
    memory->reserved = 0;
    memory->used = used_mib * (device->index + 1) * MIB;
    memory->free = memory->total > memory->used ? memory->total - memory->used : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *rates) {
    nvmlReturn_t ready = check("nvmlDeviceGetUtilizationRates", device, 1);
    if (ready != NVML_SUCCESS) {
        return ready;
    }
    if (rates == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    rates->gpu = 7 * (device->index + 1);
    rates->memory = 0;
    return NVML_SUCCESS;
}
